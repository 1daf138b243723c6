//! `snapshot restore`: member data directories that real etcd 3.4 or 3.5 starts from, written
//! natively (no etcd tool needed), exactly as `etcdctl snapshot restore` (3.4) and `etcdutl
//! snapshot restore` (3.5) write them.
//!
//! Per member (`etcdutl/snapshot/v3_snapshot.go` `Restore`; `clientv3/snapshot` in 3.4):
//! * `member/snap/db`: every bucket of the snapshot re-written compactly (the bbolt page layout
//!   differs from etcd's; contents are equal), with
//!   - `meta/consistent_index` = N (the number of members) and, in the 3.5 layout, `meta/term` = 1;
//!   - 3.5 layout: `members` holds the new members' JSON and `members_removed` is emptied
//!     (`TrimMembershipFromBackend`); the buckets `members`, `members_removed`, `cluster` are
//!     created if missing. 3.4 leaves both as they were (3.4 servers read membership from the
//!     v2 store in the `.snap`);
//!   - `--bump-revision R --mark-compacted`: an empty-valued key at revision
//!     `{latest.main + R, 0}` and `meta/scheduledCompactRev` set to it, so the server compacts
//!     to it on start;
//! * `member/snap/0000000000000001-<N>.snap`: [`crate::raftsnap`];
//! * `member/wal/0000000000000000-0000000000000000.wal` (or `--wal-dir`): [`crate::wal`].
//!
//! The layout (3.4 or 3.5) comes from `--target-version`, else from the snapshot's
//! `cluster/clusterVersion` (a 3.4 cluster's snapshot gets the 3.4 layout, anything newer the
//! 3.5 one). A snapshot carrying `meta/storageVersion` (etcd 3.6) is refused for the 3.4
//! layout: etcd 3.4.31+ panics on it.
//!
//! Safety: every member is built in a hidden sibling directory, fsynced, and renamed into
//! place; an existing non-empty data dir or an existing `--wal-dir` is refused; on error the
//! temporary directories are removed, and after a crash nothing stands at the data dir path.
//! With a separate `--wal-dir` the WAL segment is renamed to its final name only after the data
//! dir is in place. The member databases are identical: the first is written, and the others
//! share its blocks copy-on-write where the filesystem can (a reflink on XFS or btrfs: three
//! members cost the time and space of one) or are written along with it.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use bolt::{Visitor, WriteError, Writer, WriterOptions};

use crate::cluster::{ClusterSpec, ConfigError, Member};
use crate::schema::{self, Revision, RevisionKey};
use crate::trailer::{self, Trailer};
use crate::{raftsnap, wal};

/// Which etcd version's data layout to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Layout {
    #[serde(rename = "3.4")]
    V3_4,
    #[serde(rename = "3.5")]
    V3_5,
}

impl Layout {
    pub fn parse(s: &str) -> Option<Layout> {
        match s.trim_start_matches('v') {
            v if v.starts_with("3.4") => Some(Layout::V3_4),
            v if v.starts_with("3.5") => Some(Layout::V3_5),
            _ => None,
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            Layout::V3_4 => "3.4",
            Layout::V3_5 => "3.5",
        }
    }
}

/// One member directory to produce.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub data_dir: PathBuf,
    pub wal_dir: Option<PathBuf>,
}

/// What to restore.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub snapshot: PathBuf,
    pub cluster: ClusterSpec,
    pub targets: Vec<Target>,
    pub skip_hash_check: bool,
    /// Set when the snapshot's bytes were already proven equal to a checked file (a restore
    /// from the repository: the trailer was checked at backup, every chunk is authenticated on
    /// fetch): the trailer is not hashed again, and the report says why.
    pub proven_by: Option<String>,
    pub bump_revision: Option<u64>,
    pub mark_compacted: bool,
    pub target_version: Option<Layout>,
    /// Seconds added to every lease's TTL (its time left starts from the new TTL): a staged
    /// migration's new cluster must not run a lease out before the source does.
    pub lease_grace: Option<i64>,
    /// The snapshot's bytes when they are not (yet) a file of their own, such as a snapshot
    /// arriving from a backup repository while it is restored; `snapshot` then only names
    /// them. Needs `proven_by`: such bytes are proven chunk by chunk, never by the trailer.
    pub source: Option<SnapshotSource>,
}

/// Snapshot bytes read at offsets (see [`RestoreOptions::source`]).
#[derive(Clone)]
pub struct SnapshotSource {
    pub bytes: std::sync::Arc<dyn bolt::ReadAt>,
    pub len: u64,
    /// Called once every page has been read, before anything is given its final name: returns
    /// once all of the bytes have arrived and been proven, or the error that stopped them. A
    /// restore is published only from a snapshot that arrived whole.
    pub all_arrived: std::sync::Arc<dyn Fn() -> std::io::Result<()> + Send + Sync>,
}

impl std::fmt::Debug for SnapshotSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotSource").field("len", &self.len).finish_non_exhaustive()
    }
}

/// What a restore did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RestoreReport {
    pub layout: Layout,
    pub layout_reason: String,
    pub cluster_id: String,
    pub members: Vec<RestoredMember>,
    pub snapshot_revision: i64,
    pub restored_revision: i64,
    pub snapshot_consistent_index: Option<u64>,
    pub hash_checked: bool,
    /// Why the trailer was not hashed here, when the bytes were proven elsewhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proven_by: Option<String>,
    pub db_bytes: u64,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RestoredMember {
    pub name: String,
    pub id: String,
    pub data_dir: PathBuf,
    pub wal_dir: PathBuf,
    /// The member whose db this one's shares copy-on-write (a reflink), if it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub db_shared_with: Option<String>,
}

/// Why a restore did not happen. Nothing is left at any target path.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Usage(String),
    /// etcd's rule: revisions bumped past the snapshot's must be marked compacted, and only
    /// bumped revisions can be.
    #[error("a revision bump and marking the revisions compacted go together: either both or neither")]
    BumpWithoutCompaction,
    #[error(transparent)]
    Bolt(#[from] bolt::Error),
    #[error("{}: snapshot is damaged: {count} faults; first: {first}", path.display())]
    Damaged { path: PathBuf, count: usize, first: String },
    #[error("{}: snapshot missing hash: it has no sha256 trailer to check (a raw db file copied from a data dir has none)", path.display())]
    MissingHash { path: PathBuf },
    #[error("{}: sha256 mismatch: the trailer says {expected}, the data hashes to {actual}", path.display())]
    HashMismatch { path: PathBuf, expected: String, actual: String },
    #[error("{}: data dir exists and is not empty", path.display())]
    DataDirNotEmpty { path: PathBuf },
    #[error("{}: the WAL directory already exists", path.display())]
    WalDirExists { path: PathBuf },
    #[error("{}: snapshot has storage version {version} (etcd 3.6+); the {target} layout cannot hold it: etcd 3.4 panics on such a data dir", path.display())]
    Incompatible { path: PathBuf, version: String, target: &'static str },
    #[error("{}: {what}", path.display())]
    Schema { path: PathBuf, what: String },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("writing the new db: {0}")]
    Write(#[from] WriteError),
}

type Result<T> = std::result::Result<T, RestoreError>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RestoreError + '_ {
    move |source| RestoreError::Io { path: path.to_path_buf(), source }
}

/// Test hook: `QUORUM_CRASH_POINT=<name>` aborts the process (no cleanup runs, as with
/// `kill -9`) when it reaches that point. Used by the crash tests of the restore and of other
/// multi-step writers (`repo upgrade`).
pub fn crash_point(name: &str) {
    if std::env::var("QUORUM_CRASH_POINT").is_ok_and(|p| p == name) {
        std::process::abort();
    }
}

/// Where a target is built before the rename: a hidden sibling named after it and this process.
fn staging(path: &Path) -> Result<PathBuf> {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let base = path.file_name().ok_or_else(|| RestoreError::Usage(format!("{}: not a directory name", path.display())))?;
    Ok(parent.join(format!(".{}.quorum-restore-{}", base.to_string_lossy(), std::process::id())))
}

/// Remove staging directories of earlier restores whose process is gone (crashed or killed).
fn remove_stale_staging(path: &Path) {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let Some(base) = path.file_name() else { return };
    let prefix = format!(".{}.quorum-restore-", base.to_string_lossy());
    let Ok(rd) = fs::read_dir(parent) else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix(&prefix).and_then(|p| p.parse::<u32>().ok()) {
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
}

fn check_free(t: &Target) -> Result<()> {
    match fs::read_dir(&t.data_dir) {
        Ok(mut rd) => {
            if rd.next().is_some() {
                return Err(RestoreError::DataDirNotEmpty { path: t.data_dir.clone() });
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => return Err(RestoreError::DataDirNotEmpty { path: t.data_dir.clone() }),
        Err(e) => return Err(io(&t.data_dir)(e)),
    }
    if let Some(w) = &t.wal_dir {
        if w.symlink_metadata().is_ok() {
            return Err(RestoreError::WalDirExists { path: w.clone() });
        }
    }
    Ok(())
}

/// Directories are created 0700, every one of them (etcd warns on a data dir anyone can read,
/// and etcdutl creates them so).
fn mkdir(p: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new().recursive(true).mode(0o700).create(p).map_err(io(p))?;
    fs::set_permissions(p, fs::Permissions::from_mode(0o700)).map_err(io(p))
}

fn sync_dir(p: &Path) -> Result<()> {
    File::open(p).and_then(|f| f.sync_all()).map_err(io(p))
}

/// Write `data` into a new file; with `len`, the file is then allocated to `len` bytes, as etcd
/// preallocates a WAL segment: a sparse file would let the restore succeed on a filesystem
/// that cannot hold the segment, and etcd would then fail on it.
fn write_file(p: &Path, data: &[u8], mode: u32, len: Option<u64>) -> Result<()> {
    let mut f = OpenOptions::new().write(true).create_new(true).mode(mode).open(p).map_err(io(p))?;
    f.write_all(data).map_err(io(p))?;
    if let Some(l) = len {
        crate::durable::reserve(&f, l).map_err(io(p))?;
    }
    f.sync_all().map_err(io(p))
}

/// Facts read from the snapshot before anything is written.
struct Preflight {
    layout: Layout,
    reason: String,
    consistent_index: Option<u64>,
}

/// `dst` (empty) gets the complete db `src` by a reflink, or, should the filesystem that took
/// the empty probe refuse it now, by a copy; then fsynced.
fn share_db(src: &File, src_path: &Path, dst: &File, dst_path: &Path) -> Result<()> {
    if crate::durable::clone_file(dst, src).is_err() {
        let mut from = File::open(src_path).map_err(io(src_path))?;
        std::io::copy(&mut from, &mut &*dst).map_err(io(dst_path))?;
    }
    dst.sync_all().map_err(io(dst_path))
}

/// The value of `key` in the top-level bucket `bucket` of the db at `path`, if both exist.
fn get(db: &bolt::Db, path: &Path, bucket: &[u8], key: &[u8]) -> Result<Option<Vec<u8>>> {
    let schema_err = |f: bolt::Fault| RestoreError::Damaged { path: path.to_path_buf(), count: 1, first: f.to_string() };
    match db.bucket(&[bucket]).map_err(schema_err)? {
        Some(b) => b.get(key).map_err(schema_err),
        None => Ok(None),
    }
}

/// `meta/consistent_index`: the raft index the db has applied.
fn consistent_index(db: &bolt::Db, path: &Path) -> Result<Option<u64>> {
    Ok(get(db, path, schema::META, schema::META_CONSISTENT_INDEX)?.and_then(|v| v.try_into().ok().map(u64::from_be_bytes)))
}

fn preflight(db: &bolt::Db, opts: &RestoreOptions) -> Result<Preflight> {
    let path = &opts.snapshot;
    let storage = get(db, path, schema::META, schema::META_STORAGE_VERSION)?.map(|v| String::from_utf8_lossy(&v).into_owned());
    let cluster_version = get(db, path, schema::CLUSTER, b"clusterVersion")?.map(|v| String::from_utf8_lossy(&v).into_owned());
    let consistent_index = consistent_index(db, path)?;
    let (layout, reason) = match (opts.target_version, &cluster_version) {
        (Some(l), _) => (l, "the target version asked for".to_string()),
        (None, Some(cv)) if Layout::parse(cv) == Some(Layout::V3_4) => (Layout::V3_4, format!("the snapshot's cluster version is {cv}")),
        (None, Some(cv)) => (Layout::V3_5, format!("the snapshot's cluster version is {cv}")),
        (None, None) => (Layout::V3_5, "the snapshot records no cluster version; 3.5 is the default".to_string()),
    };
    if let (Some(v), Layout::V3_4) = (&storage, layout) {
        return Err(RestoreError::Incompatible { path: path.clone(), version: v.clone(), target: "3.4" });
    }
    Ok(Preflight { layout, reason, consistent_index })
}

/// Told `(done, total)` bytes as a restore reads its snapshot.
type ProgressFn<'f> = dyn Fn(u64, u64) + Sync + 'f;

/// Copies the snapshot's buckets into the writer, applying the restore's changes.
struct Copier<'a, W: Write + std::io::Seek> {
    w: Writer<W>,
    layout: Layout,
    cluster: &'a ClusterSpec,
    bump: Option<u64>,
    mark_compacted: bool,
    lease_grace: Option<i64>,
    current: Option<Vec<u8>>,
    /// Every bucket but `key` is small: buffered, changed, then written.
    buffer: Option<BTreeMap<Vec<u8>, Vec<u8>>>,
    /// Buckets to create when the snapshot lacks them (ascending).
    required: Vec<&'static [u8]>,
    latest: Revision,
    bumped: Option<Revision>,
    error: Option<RestoreError>,
    path: &'a Path,
    /// With no hasher thread to report progress, the walk reports the bytes it has copied
    /// (keys and values: a little under the file's size, which is reported at the end).
    progress: Option<(&'a ProgressFn<'a>, u64)>,
    copied: u64,
    reported: u64,
}

impl<W: Write + std::io::Seek> Copier<'_, W> {
    fn fail(&mut self, e: RestoreError) {
        if self.error.is_none() {
            self.error = Some(e);
        }
    }

    fn begin(&mut self, name: &[u8]) -> std::result::Result<(), WriteError> {
        self.required.retain(|r| *r != name);
        self.w.begin_bucket(name)?;
        self.current = Some(name.to_vec());
        self.buffer = (name != schema::KEY).then(BTreeMap::new);
        Ok(())
    }

    fn close(&mut self) -> std::result::Result<(), WriteError> {
        let Some(name) = self.current.take() else { return Ok(()) };
        if name == schema::KEY {
            if let Some(n) = self.bump {
                let new = Revision { main: self.latest.main + n as i64, sub: 0 };
                self.w.put(&new.to_bytes(), b"")?;
                self.bumped = Some(new);
            }
        }
        if let Some(mut m) = self.buffer.take() {
            self.change(&name, &mut m);
            for (k, v) in &m {
                self.w.put(k, v)?;
            }
        }
        self.w.end_bucket()
    }

    fn change(&self, name: &[u8], m: &mut BTreeMap<Vec<u8>, Vec<u8>>) {
        let n = self.cluster.members.len() as u64;
        match name {
            schema::META => {
                m.insert(schema::META_CONSISTENT_INDEX.to_vec(), n.to_be_bytes().to_vec());
                if self.layout == Layout::V3_5 {
                    m.insert(schema::META_TERM.to_vec(), 1u64.to_be_bytes().to_vec());
                }
                if let (Some(_), true) = (self.bump, self.mark_compacted) {
                    let new = Revision { main: self.latest.main + self.bump.unwrap_or(0) as i64, sub: 0 };
                    m.insert(schema::META_SCHEDULED_COMPACT.to_vec(), new.to_bytes().to_vec());
                }
            }
            schema::MEMBERS if self.layout == Layout::V3_5 => {
                m.clear();
                for mem in &self.cluster.members {
                    m.insert(mem.hex_id().into_bytes(), mem.to_json().into_bytes());
                }
            }
            schema::MEMBERS_REMOVED if self.layout == Layout::V3_5 => m.clear(),
            schema::LEASE if self.lease_grace.is_some() => {
                use prost::Message;
                let grace = self.lease_grace.unwrap_or(0);
                for v in m.values_mut() {
                    // A lease that does not decode is kept as it is (etcd skips it too).
                    if let Ok(mut l) = schema::Lease::decode(v.as_slice()) {
                        l.ttl = l.ttl.saturating_add(grace);
                        l.remaining_ttl = 0;
                        *v = l.encode_to_vec();
                    }
                }
            }
            _ => {}
        }
    }

    /// Create required buckets that sort before `next` (all when None).
    fn create_required(&mut self, next: Option<&[u8]>) -> std::result::Result<(), WriteError> {
        while let Some(&r) = self.required.first() {
            if next.is_some_and(|n| r >= n) {
                break;
            }
            self.begin(r)?;
            self.close()?;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<(W, bolt::WriteStats, Option<Revision>, Revision)> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        self.close()?;
        self.create_required(None)?;
        let (w, stats) = self.w.finish()?;
        Ok((w, stats, self.bumped, self.latest))
    }
}

impl<W: Write + std::io::Seek> Visitor for Copier<'_, W> {
    fn entry(&mut self, path: &[Vec<u8>], key: &[u8], value: Option<&[u8]>) {
        if self.error.is_some() {
            return;
        }
        if let Some((report, total)) = self.progress {
            self.copied += (key.len() + value.map_or(0, <[u8]>::len)) as u64;
            if self.copied - self.reported >= 8 << 20 {
                self.reported = self.copied;
                report(self.copied.min(total), total);
            }
        }
        let r = match (path.len(), value) {
            (0, None) => self.close().and_then(|_| self.create_required(Some(key))).and_then(|_| self.begin(key)),
            (0, Some(_)) => {
                let what = format!("top-level key {} is not a bucket", bolt::show(key));
                return self.fail(RestoreError::Schema { path: self.path.to_path_buf(), what });
            }
            (1, Some(v)) => {
                if let Some(m) = &mut self.buffer {
                    m.insert(key.to_vec(), v.to_vec());
                    Ok(())
                } else {
                    if let Ok(rk) = RevisionKey::parse(key) {
                        self.latest = self.latest.max(rk.rev);
                    }
                    self.w.put(key, v)
                }
            }
            _ => {
                let what = format!("nested bucket {} inside {} (etcd writes none)", bolt::show(key), bolt::show(&path[0]));
                return self.fail(RestoreError::Schema { path: self.path.to_path_buf(), what });
            }
        };
        if let Err(e) = r {
            self.fail(e.into());
        }
    }
}

/// The revision bump suggested for a db whose raft index is `consistent_index`: as OpenShift's
/// restore, the index × 1.2 (revisions never outrun the raft index, and the lost members may
/// have applied more than this db), or 1,000,000,000 when the db records none.
pub fn bump_for(consistent_index: Option<u64>) -> u64 {
    consistent_index.map(|ci| (ci as f64 * 1.2).ceil() as u64).filter(|v| *v > 0).unwrap_or(1_000_000_000)
}

/// [`bump_for`] the db (or snapshot) at `path`.
pub fn suggested_bump(path: &Path) -> Result<u64> {
    Ok(bump_for(consistent_index(&bolt::Db::open(path)?, path)?))
}

/// The member data dir (or WAL dir) a `{name}` template names for member `name`.
pub fn expand(template: &Path, name: &str) -> PathBuf {
    PathBuf::from(template.to_string_lossy().replace("{name}", name))
}

/// Restore. `progress(done, total)` reports bytes of the snapshot hashed.
pub fn restore(opts: &RestoreOptions, progress: &(dyn Fn(u64, u64) + Sync)) -> Result<RestoreReport> {
    if opts.bump_revision.is_some() != opts.mark_compacted {
        return Err(RestoreError::BumpWithoutCompaction);
    }
    if opts.targets.is_empty() {
        return Err(RestoreError::Usage("no member to restore".into()));
    }
    let members: Vec<&Member> = opts
        .targets
        .iter()
        .map(|t| {
            opts.cluster.members.iter().find(|m| m.name == t.name).ok_or_else(|| ConfigError::NameNotInCluster {
                name: t.name.clone(),
                members: opts.cluster.members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", "),
            })
        })
        .collect::<std::result::Result<_, _>>()?;
    for t in &opts.targets {
        check_free(t)?;
        remove_stale_staging(&t.data_dir);
        if let Some(w) = &t.wal_dir {
            remove_stale_staging(w);
        }
    }
    let db = match &opts.source {
        Some(_) if opts.proven_by.is_none() => {
            return Err(RestoreError::Usage("snapshot bytes without a file of their own must be proven already (proven_by)".into()))
        }
        Some(src) => bolt::Db::open_source(&opts.snapshot, src.bytes.clone(), src.len)?,
        None => bolt::Db::open(&opts.snapshot)?,
    };
    let has_trailer = trailer::has_trailer(db.file_len());
    if !has_trailer && !opts.skip_hash_check && opts.proven_by.is_none() {
        return Err(RestoreError::MissingHash { path: opts.snapshot.clone() });
    }
    let pre = preflight(&db, opts)?;

    let stages: Vec<(PathBuf, Option<PathBuf>)> =
        opts.targets.iter().map(|t| Ok((staging(&t.data_dir)?, t.wal_dir.as_deref().map(staging).transpose()?))).collect::<Result<_>>()?;
    let cleanup = || {
        for (d, w) in &stages {
            let _ = fs::remove_dir_all(d);
            if let Some(w) = w {
                let _ = fs::remove_dir_all(w);
            }
        }
    };
    let result = build_and_install(opts, &db, &pre, &members, &stages, has_trailer, progress);
    if result.is_err() {
        cleanup();
    }
    result
}

fn build_and_install(
    opts: &RestoreOptions,
    db: &bolt::Db,
    pre: &Preflight,
    members: &[&Member],
    stages: &[(PathBuf, Option<PathBuf>)],
    has_trailer: bool,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<RestoreReport> {
    for (d, w) in stages {
        mkdir(&d.join("member/snap"))?;
        match w {
            Some(w) => mkdir(w)?,
            None => mkdir(&d.join("member/wal"))?,
        }
    }
    // 1. The databases (identical for every member), streamed from the snapshot while a second
    //    thread checks the snapshot's sha256: into the first member; every other member whose
    //    db cannot share the first's blocks (a reflink, tried on the empty files) gets kernel
    //    copies of the first as it grows ([`crate::tee`]). Those that can share get the blocks
    //    once the first is complete: no second write of the bytes.
    let db_paths: Vec<PathBuf> = stages.iter().map(|(d, _)| d.join("member/snap/db")).collect();
    let files = db_paths
        .iter()
        .enumerate()
        .map(|(i, p)| OpenOptions::new().read(i == 0).write(true).create_new(true).mode(0o600).open(p).map_err(io(p)))
        .collect::<Result<Vec<_>>>()?;
    let mut files = files.into_iter();
    let first = files.next().expect("at least one member");
    let (mut teed, mut teed_members, mut shared) = (vec![first], vec![0], Vec::new());
    for (i, f) in files.enumerate() {
        if crate::durable::clone_file(&f, &teed[0]).is_ok() {
            shared.push((i + 1, f));
        } else {
            teed.push(f);
            teed_members.push(i + 1);
        }
    }
    let tee_err = |e: crate::tee::TeeError| RestoreError::Io { path: db_paths[teed_members[e.file]].clone(), source: e.source };
    let tee = crate::tee::Tee::new(teed).map_err(tee_err)?;
    let required: Vec<&'static [u8]> = match pre.layout {
        Layout::V3_5 => vec![schema::CLUSTER, schema::KEY, schema::LEASE, schema::MEMBERS, schema::MEMBERS_REMOVED, schema::META],
        Layout::V3_4 => vec![schema::KEY, schema::LEASE, schema::META],
    };
    let mut copier = Copier {
        w: Writer::new(BufWriter::with_capacity(8 << 20, tee), WriterOptions { freelist: bolt::FreelistMode::EmptyPage, ..Default::default() })?,
        layout: pre.layout,
        cluster: &opts.cluster,
        bump: opts.bump_revision,
        mark_compacted: opts.mark_compacted,
        lease_grace: opts.lease_grace,
        current: None,
        buffer: None,
        required,
        latest: Revision::default(),
        bumped: None,
        error: None,
        path: &opts.snapshot,
        progress: None,
        copied: 0,
        reported: 0,
    };
    let check_hash = has_trailer && !opts.skip_hash_check && opts.proven_by.is_none();
    let file_len = db.file_len();
    if !check_hash {
        copier.progress = Some((progress, file_len));
        progress(0, file_len);
    }
    let (hash, report) = std::thread::scope(|s| {
        let hasher = check_hash.then(|| s.spawn(|| trailer::check(&opts.snapshot, |d| progress(d, file_len))));
        let report = bolt::walk(db, &mut copier);
        (hasher.map(|h| h.join().expect("hash thread")), report)
    });
    if let Some(first) = report.faults.first() {
        return Err(RestoreError::Damaged { path: opts.snapshot.clone(), count: report.fault_count, first: first.to_string() });
    }
    let trailer = hash.transpose().map_err(|e| match e {
        crate::Error::Io { path, source } => RestoreError::Io { path, source },
        other => RestoreError::Usage(other.to_string()),
    })?;
    if let Some(Trailer::Mismatch { expected, actual }) = trailer {
        return Err(RestoreError::HashMismatch { path: opts.snapshot.clone(), expected, actual });
    }
    if let Some(src) = &opts.source {
        (src.all_arrived)().map_err(io(&opts.snapshot))?;
    }
    if !check_hash {
        progress(file_len, file_len);
    }
    crash_point("db-streamed");
    // A write that failed (a full filesystem) names the file it was writing.
    let (out, stats, bumped, latest) = copier.finish().map_err(|e| match e {
        RestoreError::Write(WriteError::Io(source)) => RestoreError::Io { path: db_paths[0].clone(), source },
        e => e,
    })?;
    let tee = out.into_inner().map_err(|e| io(&db_paths[0])(e.into_error()))?;
    let teed = tee.finish().map_err(tee_err)?;
    for (i, f) in &shared {
        share_db(&teed[0], &db_paths[0], f, &db_paths[*i])?;
    }
    crash_point("db-written");

    // 2. Per member: the WAL and the .snap, fsynced.
    let n = opts.cluster.members.len() as u64;
    let snap = raftsnap::restore_snap(&opts.cluster);
    let snap_name = raftsnap::snap_file_name(1, n);
    std::thread::scope(|s| -> Result<()> {
        let jobs: Vec<_> = stages
            .iter()
            .zip(members)
            .map(|((d, w), m)| {
                let (snap, snap_name) = (&snap, &snap_name);
                s.spawn(move || -> Result<()> {
                    let wal_dir = w.clone().unwrap_or_else(|| d.join("member/wal"));
                    let name = if w.is_some() { format!("{}.quorum-pending", wal::FIRST_SEGMENT) } else { wal::FIRST_SEGMENT.to_string() };
                    let wal_bytes = wal::restore_wal(&opts.cluster, m.id, pre.layout == Layout::V3_5);
                    write_file(&wal_dir.join(name), &wal_bytes, 0o600, Some(wal::SEGMENT_SIZE))?;
                    crash_point("wal-written");
                    write_file(&d.join("member/snap").join(snap_name), snap, 0o644, None)?;
                    for p in [d.join("member/snap"), wal_dir.clone(), d.join("member"), d.clone()] {
                        sync_dir(&p)?;
                    }
                    Ok(())
                })
            })
            .collect();
        jobs.into_iter().try_for_each(|j| j.join().expect("member thread"))
    })?;
    crash_point("before-rename");

    // 3. Into place.
    let mut restored = Vec::new();
    for (i, ((t, (d, w)), m)) in opts.targets.iter().zip(stages).zip(members).enumerate() {
        if let (Some(wd), Some(ws)) = (&t.wal_dir, w) {
            fs::rename(ws, wd).map_err(io(wd))?;
            crash_point("wal-dir-renamed");
        }
        if t.data_dir.is_dir() {
            // An existing empty data dir (checked above) is replaced.
            fs::remove_dir(&t.data_dir).map_err(io(&t.data_dir))?;
        }
        fs::rename(d, &t.data_dir).map_err(io(&t.data_dir))?;
        if let Some(wd) = &t.wal_dir {
            let from = wd.join(format!("{}.quorum-pending", wal::FIRST_SEGMENT));
            fs::rename(&from, wd.join(wal::FIRST_SEGMENT)).map_err(io(wd))?;
            sync_dir(wd)?;
            if let Some(p) = wd.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(p)?;
            }
        }
        if let Some(p) = t.data_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(p)?;
        }
        restored.push(RestoredMember {
            name: m.name.clone(),
            id: m.hex_id(),
            data_dir: t.data_dir.clone(),
            wal_dir: t.wal_dir.clone().unwrap_or_else(|| t.data_dir.join("member/wal")),
            db_shared_with: shared.iter().any(|(s, _)| *s == i).then(|| members[0].name.clone()),
        });
    }

    let mut warnings = Vec::new();
    if opts.bump_revision.is_none() {
        let suggest = bump_for(pre.consistent_index);
        warnings.push(format!(
            "no --bump-revision: Kubernetes API servers and their watch caches may miss changes or keep stale objects after a restore; \
             restore with --bump-revision {suggest} --mark-compacted (OpenShift's restore uses the highest raft index seen × 1.2, or 1000000000)"
        ));
    }
    Ok(RestoreReport {
        layout: pre.layout,
        layout_reason: pre.reason.clone(),
        cluster_id: format!("{:x}", opts.cluster.cluster_id),
        members: restored,
        snapshot_revision: latest.main,
        restored_revision: bumped.map(|b| b.main).unwrap_or(latest.main),
        snapshot_consistent_index: pre.consistent_index,
        hash_checked: check_hash,
        proven_by: if check_hash { None } else { opts.proven_by.clone() },
        db_bytes: stats.bytes,
        warnings,
    })
}
