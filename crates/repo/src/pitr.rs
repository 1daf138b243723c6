//! Point-in-time restore: a full backup plus the delta segments after it, replayed offline up
//! to a revision (or to the last revision received at or before a time), then restored natively.
//!
//! 1. The base is the backup of the cluster with the highest revision `<= R` (for a time `T`:
//!    among those finished at or before `T`), unless one is named.
//! 2. The segments are chosen by their names ([`crate::delta::plan_chain`]); a gap or a target
//!    beyond the last captured revision is refused before anything is downloaded or written.
//! 3. The segments are fetched into a temporary directory beside the first data dir (sealed,
//!    as stored) while the base arrives there (`restore::Incoming`); then one pass,
//!    reading the base as it lands, copies the base's buckets and
//!    appends every event with revision in `(base, R]` to the `key` bucket
//!    ([`etcd_data::replay`]), and the native restore ([`etcd_data::restore`]) writes the member
//!    data dirs from that db (it sets `meta/consistent_index` and `term` as `snapshot restore`
//!    does).
//!
//! Memory: one decoded segment at a time.
//!
//! Leases: the lease bucket is the base's. Keys put later with a lease granted after the base
//! keep that lease ID, but the restored member knows no such lease: on start, etcd's
//! `kvstore.restore` fails to attach them (`failed to attach a lease`, logged) and they never
//! expire. Leases of the base start a full TTL again (or their last checkpointed remaining TTL)
//! once the restored cluster has a leader (`lessor.Promote`), as after any restore.
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjPath;
use serde::Serialize;

use etcd_data::replay::{ReplayReport, RevisionChanges};
use etcd_data::restore::{RestoreOptions, RestoreReport};

use crate::delta::{self, Chain, SegmentRef};
use crate::error::{Error, Result};
use crate::format::Manifest;
use crate::repository::Repository;
use crate::restore::Progress;

/// Where to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// This revision, exactly.
    Revision(i64),
    /// The last revision the capture had received at this time (Unix milliseconds).
    Time(i64),
}

/// Parse `--at-time`: RFC 3339 (`2024-05-01T12:00:00Z`, `2024-05-01T14:00:00.250+02:00`).
pub fn parse_time(s: &str) -> Result<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|e| Error::Usage(format!("time {s:?}: {e} (want RFC 3339, e.g. 2024-05-01T12:00:00Z)")))
}

fn show_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)).unwrap_or_else(|| ms.to_string())
}

#[derive(Debug, Clone)]
pub struct PitrOptions {
    pub cluster: String,
    pub target: Target,
    /// Use this backup (id or unique prefix) as the base instead of choosing one.
    pub base: Option<String>,
    pub parallel: usize,
}

/// What a point-in-time restore did.
#[derive(Debug, Clone, Serialize)]
pub struct PitrReport {
    pub cluster: String,
    pub base: String,
    pub base_revision: i64,
    pub base_time: String,
    /// The revision restored to.
    pub target_revision: i64,
    /// With `--at-time`: the time asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_time: Option<String>,
    /// The receive time of the last replayed revision (absent when none was replayed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_revision_time: Option<String>,
    pub segments: usize,
    pub replay: ReplayReport,
    pub restore: RestoreReport,
}

fn manifest_ms(m: &Manifest) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(&m.time).ok().map(|t| t.timestamp_millis())
}

/// Choose the base backup for `target`.
async fn choose_base(repo: &Repository, p: &PitrOptions) -> Result<(String, Manifest)> {
    if let Some(id) = &p.base {
        let (id, m) = repo.resolve(id, Some(&p.cluster)).await?;
        if let Target::Revision(r) = p.target {
            if m.snapshot.revision > r {
                return Err(Error::Usage(format!("backup {} is at revision {}, after {r}", crate::short(&id), m.snapshot.revision)));
            }
        }
        return Ok((id, m));
    }
    let all: Vec<(String, Manifest)> = repo.manifests(&p.cluster).await?;
    if all.is_empty() {
        repo.known_cluster(&p.cluster).await?;
        return Err(Error::Missing(format!("the repository holds no backup of cluster {}", p.cluster)));
    }
    let fits = |m: &Manifest| match p.target {
        Target::Revision(r) => m.snapshot.revision <= r,
        Target::Time(t) => manifest_ms(m).is_some_and(|mt| mt <= t),
    };
    let best = all.iter().filter(|(_, m)| fits(m)).max_by(|a, b| a.1.snapshot.revision.cmp(&b.1.snapshot.revision).then_with(|| a.1.time.cmp(&b.1.time)));
    match best {
        Some(b) => Ok(b.clone()),
        None => {
            let oldest = all.iter().min_by_key(|(_, m)| m.snapshot.revision).expect("non-empty");
            Err(Error::Missing(match p.target {
                Target::Revision(r) => format!(
                    "no backup of cluster {} is at or before revision {r}: the oldest is at revision {} ({})",
                    p.cluster, oldest.1.snapshot.revision, oldest.1.time
                ),
                Target::Time(t) => format!("no backup of cluster {} finished at or before {}: the oldest finished at {}", p.cluster, show_ms(t), oldest.1.time),
            }))
        }
    }
}

/// The chain from `base` and, for a revision target, the check that it reaches it.
pub async fn plan(repo: &Repository, cluster: &str, base_revision: i64, target: Option<i64>) -> Result<Chain> {
    let segs = delta::list_segments(repo, cluster).await?;
    Ok(delta::plan_chain(&segs, base_revision + 1, target))
}

/// `backups deltas`: the delta chain of a cluster after a backup (`base`: id or prefix;
/// default the backup with the highest revision), with every gap.
#[derive(Debug, Clone, Serialize)]
pub struct ChainReport {
    pub cluster: String,
    pub base: String,
    pub base_revision: i64,
    pub base_time: String,
    pub chain: Chain,
}

pub async fn chain_report(repo: &Repository, cluster: &str, base: Option<&str>) -> Result<ChainReport> {
    delta::check_cluster_name(cluster)?;
    let (id, m) = match base {
        Some(b) => repo.resolve(b, Some(cluster)).await?,
        None => repo
            .manifests(cluster)
            .await?
            .into_iter()
            .max_by(|a, b| a.1.snapshot.revision.cmp(&b.1.snapshot.revision).then_with(|| a.1.time.cmp(&b.1.time)))
            .ok_or_else(|| Error::Missing(format!("the repository holds no backup of cluster {cluster}")))?,
    };
    let chain = plan(repo, cluster, m.snapshot.revision, None).await?;
    Ok(ChainReport { cluster: cluster.into(), base: id, base_revision: m.snapshot.revision, base_time: m.time, chain })
}

/// Download `segs` into `dir` as `0`, `1`, … (sealed, as stored).
async fn fetch_all(repo: &Arc<Repository>, segs: &[SegmentRef], dir: &Path, parallel: usize) -> Result<Vec<PathBuf>> {
    let paths: Vec<PathBuf> = (0..segs.len()).map(|i| dir.join(i.to_string())).collect();
    futures::stream::iter(segs.iter().zip(&paths))
        .map(|(s, p)| async move {
            let b = repo.get(&ObjPath::from(s.name.as_str())).await?;
            tokio::fs::write(p, &b).await.map_err(|e| Error::io(p, e))
        })
        .buffer_unordered(parallel.clamp(1, 8))
        .try_collect::<Vec<()>>()
        .await?;
    Ok(paths)
}

/// For a time target: fetch segments in order until one holds a revision received after `t`.
/// Returns the files, the revision to stop at and its receive time.
async fn fetch_until(repo: &Arc<Repository>, chain: &Chain, base_revision: i64, t: i64, dir: &Path, cluster: &str) -> Result<(Vec<PathBuf>, i64, Option<i64>)> {
    let mut files = Vec::new();
    let mut stop = base_revision;
    let mut stop_time = None;
    let mut fetched = futures::stream::iter(chain.segments.iter().cloned())
        .map(|s| {
            let repo = repo.clone();
            async move { Ok::<_, Error>((repo.get(&ObjPath::from(s.name.as_str())).await?, s)) }
        })
        .buffered(4);
    while let Some(r) = fetched.next().await {
        let (stored, s) = r?;
        let seg = delta::open_segment(repo.data_key(), &s.name, &stored)?;
        let p = dir.join(files.len().to_string());
        tokio::fs::write(&p, &stored).await.map_err(|e| Error::io(&p, e))?;
        files.push(p);
        for rec in &seg.records {
            if rec.revision <= stop {
                continue;
            }
            if rec.time_ms > t {
                return Ok((files, stop, stop_time));
            }
            stop = rec.revision;
            stop_time = Some(rec.time_ms);
        }
    }
    let when = stop_time.map(|m| format!(" (received {})", show_ms(m))).unwrap_or_default();
    Err(Error::Missing(match chain.gaps.first() {
        Some(g) => format!(
            "{} is after the last contiguously captured revision {stop}{when} of cluster {cluster}, and {g} {} missing from the delta chain",
            show_ms(t),
            g.are()
        ),
        None => format!(
            "{} is after the last captured revision {stop}{when} of cluster {cluster}: the chain cannot show what changed later; a restore at revision {stop} or earlier can use it",
            show_ms(t)
        ),
    }))
}

/// The revisions of segment files, in order, limited to `(after, upto]`.
struct Changes {
    key: crate::crypto::MasterKey,
    files: VecDeque<(PathBuf, String)>,
    current: std::vec::IntoIter<delta::Record>,
    after: i64,
    upto: i64,
    /// The base backup's etcd cluster ID: segments captured from another cluster are refused.
    cluster_id: Option<String>,
    last_time: Option<i64>,
    /// Leases the segments read so far recorded (id → granted TTL).
    leases: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<i64, i64>>>,
}

impl Iterator for Changes {
    type Item = std::result::Result<RevisionChanges, String>;
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            for r in self.current.by_ref() {
                if r.revision > self.upto {
                    self.files.clear();
                    return None;
                }
                if r.revision > self.after {
                    self.after = r.revision;
                    self.last_time = Some(r.time_ms);
                    return Some(Ok(r.changes()));
                }
            }
            let (path, name) = self.files.pop_front()?;
            let seg = std::fs::read(&path)
                .map_err(|e| format!("{}: {e}", path.display()))
                .and_then(|b| delta::open_segment(&self.key, &name, &b).map_err(|e| e.to_string()));
            let _ = std::fs::remove_file(&path);
            match seg {
                Ok(s) => {
                    if let (Some(want), Some(have)) = (&self.cluster_id, &s.header.cluster_id) {
                        if want != have {
                            self.files.clear();
                            return Some(Err(format!("{name} was captured from etcd cluster {have}, the base backup from cluster {want}")));
                        }
                    }
                    self.leases.lock().unwrap().extend(s.header.leases.iter().copied());
                    self.current = s.records.into_iter()
                }
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// A snapshot file of `p.cluster` as it was at `p.target`, built offline in `dir` (a private
/// temporary directory of the caller): the base reassembled, the segments replayed.
pub(crate) struct Replayed {
    pub base_id: String,
    pub base: Manifest,
    pub db: PathBuf,
    pub target_revision: i64,
    pub target_revision_time: Option<i64>,
    pub segments: usize,
    pub replay: ReplayReport,
}

/// Build the replayed file; the caller holds a shared lock on `p.cluster`.
pub(crate) async fn replay_to_file(repo: &Arc<Repository>, p: &PitrOptions, dir: &Path, progress: Progress) -> Result<Replayed> {
    let (base_id, m) = choose_base(repo, p).await?;
    let base_rev = m.snapshot.revision;
    let chain = plan(
        repo,
        &p.cluster,
        base_rev,
        match p.target {
            Target::Revision(r) => Some(r),
            Target::Time(_) => None,
        },
    )
    .await?;
    if let Target::Revision(r) = p.target {
        chain.check_target(&p.cluster, r)?;
    }
    let snap = dir.join("base.db");
    let segdir = dir.join("segments");
    std::fs::create_dir(&segdir).map_err(|e| Error::io(&segdir, e))?;
    // The base arrives into a temporary file while the segments are fetched, and the replay
    // reads it as it lands (as `restore --repo` does) once the segments are here.
    let incoming = crate::restore::Incoming::start(repo, &m, &snap, false).await?;
    let source = incoming.source();
    let abandon = incoming.abandon();
    let base_fetch = incoming.fetch(repo.clone(), p.parallel, progress);
    let merged = dir.join("merged.db");
    let replayed = async {
        let fetched = match p.target {
            Target::Revision(r) => fetch_all(repo, &chain.segments, &segdir, p.parallel).await.map(|f| (f, r, None)),
            Target::Time(t) => fetch_until(repo, &chain, base_rev, t, &segdir, &p.cluster).await,
        };
        let (files, upto, upto_time) = match fetched {
            Ok(f) => f,
            Err(e) => {
                abandon();
                return Err(e);
            }
        };
        let used = files.len().min(chain.segments.len());
        let mut changes = Changes {
            key: repo.data_key().clone(),
            files: files.into_iter().zip(chain.segments.iter().map(|s| s.name.clone())).collect(),
            current: Vec::new().into_iter(),
            after: base_rev,
            upto,
            cluster_id: m.cluster_id.clone(),
            last_time: None,
            leases: Default::default(),
        };
        let leases = changes.leases.clone();
        let merged2 = merged.clone();
        let short = crate::short(&base_id).to_string();
        let snap = snap.clone();
        let (replay, last_time) = tokio::task::spawn_blocking(move || -> Result<(ReplayReport, Option<i64>)> {
            let new_leases = move || leases.lock().unwrap().iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>();
            let replay = etcd_data::replay::replay(&snap, Some(&source), &merged2, &mut changes, &new_leases);
            if replay.is_err() {
                abandon();
            }
            let replay = replay.map_err(|e| Error::Damaged(format!("replaying the deltas onto backup {short}: {e}")))?;
            let _ = std::fs::remove_file(&snap);
            Ok((replay, changes.last_time))
        })
        .await
        .map_err(|e| Error::Other(format!("replay task: {e}")))??;
        Ok::<_, Error>((replay, last_time, used, upto, upto_time))
    };
    let (fetched, replayed) = tokio::join!(base_fetch, replayed);
    // The fetch's own error says more than the replay's "could not be fetched".
    fetched?;
    let (replay, last_time, used, upto, upto_time) = replayed?;
    let target_revision = match p.target {
        Target::Revision(r) => r,
        Target::Time(_) => upto,
    };
    Ok(Replayed { base_id, base: m, db: merged, target_revision, target_revision_time: upto_time.or(last_time), segments: used, replay })
}

/// Restore `p.cluster` as it was at `p.target` into the member data dirs of `opts` (the
/// `snapshot` and `skip_hash_check` of `opts` are set here). Under a shared lock on the
/// cluster while the repository is read.
pub async fn restore_at(repo: Arc<Repository>, p: &PitrOptions, mut opts: RestoreOptions, progress: Progress) -> Result<PitrReport> {
    delta::check_cluster_name(&p.cluster)?;
    let first = opts.targets.first().ok_or_else(|| Error::Usage("nothing to restore into".into()))?.data_dir.clone();
    for t in &opts.targets {
        if std::fs::read_dir(&t.data_dir).map(|mut d| d.next().is_some()).unwrap_or(false) {
            return Err(Error::Restore(etcd_data::restore::RestoreError::DataDirNotEmpty { path: t.data_dir.clone() }));
        }
    }
    let parent = first.parent().map(Path::to_path_buf).filter(|p| !p.as_os_str().is_empty()).unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
    let tmp = crate::scratch::Scratch::new(&parent, ".quorum-pitr-")?;
    repo.known_cluster(&p.cluster).await?;
    let lock = repo.lock(&p.cluster, false, "restore").await?;
    let replayed = replay_to_file(&repo, p, tmp.path(), progress).await;
    lock.release().await;
    let rp = replayed?;
    opts.snapshot = rp.db.clone();
    opts.skip_hash_check = true; // the base's trailer was checked during the replay
    let restore =
        tokio::task::spawn_blocking(move || etcd_data::restore::restore(&opts, &|_, _| {})).await.map_err(|e| Error::Other(format!("restore task: {e}")))??;
    drop(tmp);
    Ok(PitrReport {
        cluster: p.cluster.clone(),
        base: rp.base_id,
        base_revision: rp.base.snapshot.revision,
        base_time: rp.base.time.clone(),
        target_revision: rp.target_revision,
        target_time: match p.target {
            Target::Time(t) => Some(show_ms(t)),
            Target::Revision(_) => None,
        },
        target_revision_time: rp.target_revision_time.map(show_ms),
        segments: rp.segments,
        replay: rp.replay,
        restore,
    })
}
