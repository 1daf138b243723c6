//! `quorum forget` (remove manifests a retention policy does not keep, and decide which delta
//! segments stay) and `quorum prune` (remove data and segments nothing needs), one cluster at
//! a time: each reads and writes only `clusters/<C>/`.
//!
//! Prune holds the cluster's exclusive lock, so no backup, restore or drill of it is running:
//! every pack that no index names is left over from an interrupted backup and is removed.
//! Packs whose blobs are all unreferenced are removed; packs with more than `max_unused` of
//! their bytes unreferenced are repacked (their live blobs copied, still sealed, into new
//! packs). Order: new packs, one new index for everything kept, then the old index objects
//! are deleted, and only when all of those are gone the packs. A kill at any point leaves
//! every manifest's blobs reachable. Delta segments at or below the cluster's delta floor
//! (FORMAT.md, "Deltas under retention") are deleted last.
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use object_store::path::Path as ObjPath;
use serde::{Deserialize, Serialize};

use crate::delta::{self, SegmentRef};
use crate::error::{Error, Result};
use crate::format::{self, BlobId, IndexPack, Manifest};
use crate::repository::{parse_id, Repository};
use crate::retention::{self, Decision, Policy};

/// What forget decided for one cluster's delta segments.
#[derive(Debug, Clone, Serialize)]
pub struct DeltaRetention {
    pub cluster: String,
    /// Segments ending at or below this revision are no longer needed (absent: every
    /// segment is, as no backup is left).
    pub floor: Option<i64>,
    /// The segments the next prune deletes.
    pub remove: Vec<SegmentRef>,
    /// Segments that stay.
    pub keep: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ForgetReport {
    pub decisions: Vec<Decision>,
    pub removed: Vec<String>,
    /// Manifests the bucket refused to delete (object lock), with the store's words.
    pub refused: Vec<(String, String)>,
    pub deltas: Vec<DeltaRetention>,
    pub dry_run: bool,
}

/// A sealed `clusters/<C>/retention/<time>-<rand>` record: forget's point-in-time window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RetentionRecord {
    pub cluster: String,
    pub time: String,
    pub keep_pitr_seconds: u64,
    pub delta_floor: i64,
}

/// The delta floor of a cluster whose backups are `all` (revision, finish time), `kept` of
/// them by the policy: the oldest kept backup's revision; with a point-in-time window
/// `keep_pitr`, the revision of the newest backup (kept or not: forget then keeps it) finished
/// at or before `now - keep_pitr` (the oldest backup when none did), the base every restore
/// into the window replays from. `None`: no backup is kept.
pub fn delta_floor(all: &[(i64, DateTime<Utc>)], kept: &[(i64, DateTime<Utc>)], keep_pitr: Option<Duration>, now: DateTime<Utc>) -> Option<i64> {
    let oldest = kept.iter().map(|k| k.0).min()?;
    let Some(w) = keep_pitr else { return Some(oldest) };
    let start = chrono::Duration::from_std(w).ok().and_then(|d| now.checked_sub_signed(d)).unwrap_or(DateTime::<Utc>::MIN_UTC);
    // No backup finished before the window starts: the oldest backup is the best base.
    let base = all.iter().filter(|k| k.1 <= start).max_by_key(|k| (k.1, k.0)).or_else(|| all.iter().min_by_key(|k| (k.0, k.1)));
    Some(base.map_or(oldest, |b| b.0))
}

fn manifest_time(m: &Manifest) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(&m.time).map(|t| t.with_timezone(&Utc)).unwrap_or_default()
}

/// The retention records of `cluster` (name, record), oldest first; unreadable ones skipped.
async fn retention_records(repo: &Repository, cluster: &str) -> Result<Vec<(ObjPath, RetentionRecord)>> {
    let mut out = Vec::new();
    for m in repo.list(&format::cluster_path(cluster, "retention")).await? {
        let b = match repo.get(&m.location).await {
            Ok(b) => b,
            Err(Error::Missing(_)) => continue,
            Err(e) => return Err(e),
        };
        match repo.open_json::<RetentionRecord>(&b, b"retention", m.location.as_ref()) {
            Ok(r) if r.cluster == cluster => out.push((m.location.clone(), r)),
            Ok(_) => eprintln!("Warning: {} names another cluster; ignored", m.location),
            Err(e) => eprintln!("Warning: {e}; ignored"),
        }
    }
    out.sort_by(|a, b| a.0.as_ref().cmp(b.0.as_ref()));
    Ok(out)
}

/// The floor in force: `base` (the floor the backups give), or a higher one recorded by an
/// earlier forget, which never lifts it past the `newest` backup (its chain to the end always
/// stays). `None` (no backup): no floor.
fn floor_in_force(base: Option<i64>, recorded: &[(ObjPath, RetentionRecord)], newest: Option<i64>) -> Option<i64> {
    let base = base?;
    let recorded = recorded.iter().map(|(_, r)| r.delta_floor).max();
    Some(match (recorded, newest) {
        (Some(r), Some(n)) => base.max(r.min(n)),
        _ => base,
    })
}

/// The floor in force for `cluster`: from its backups `revs` and its retention records.
async fn effective_floor(repo: &Repository, cluster: &str, revs: &[i64]) -> Result<(Option<i64>, Vec<(ObjPath, RetentionRecord)>)> {
    let records = retention_records(repo, cluster).await?;
    let floor = floor_in_force(revs.iter().copied().min(), &records, revs.iter().copied().max());
    Ok((floor, records))
}

/// The delta floor in force for `cluster` with backups at `revisions` (`repo check`).
pub async fn floor_for(repo: &Repository, cluster: &str, revisions: &[i64]) -> Result<Option<i64>> {
    Ok(effective_floor(repo, cluster, revisions).await?.0)
}

/// Segments of `segs` at or below `floor` (all with no floor).
fn below(segs: &[SegmentRef], floor: Option<i64>) -> Vec<SegmentRef> {
    segs.iter().filter(|s| floor.is_none_or(|f| s.last <= f)).cloned().collect()
}

/// The clusters an operation covers: the one named (which must exist), or all.
async fn scope(repo: &Repository, cluster: Option<&str>) -> Result<Vec<String>> {
    match cluster {
        Some(c) => {
            repo.cluster_exists(c).await?;
            Ok(vec![c.to_string()])
        }
        None => repo.clusters().await,
    }
}

/// Apply `policy` (to one cluster, or each) and delete the manifests it does not keep;
/// with `keep_pitr`, record the point-in-time window for prune. Under a shared lock per
/// cluster.
pub async fn forget(repo: &Repository, policy: &Policy, cluster: Option<&str>, keep_pitr: Option<Duration>, dry_run: bool) -> Result<ForgetReport> {
    if policy.is_empty() {
        return Err(Error::Usage("give a retention policy: keep-last, keep-hourly, keep-daily, keep-weekly and/or keep-monthly".into()));
    }
    let mut report = ForgetReport { decisions: Vec::new(), removed: Vec::new(), refused: Vec::new(), deltas: Vec::new(), dry_run };
    for c in scope(repo, cluster).await? {
        let lock = repo.lock(&c, false, "forget").await?;
        let r = forget_cluster(repo, policy, &c, keep_pitr, dry_run, &mut report).await;
        lock.release().await;
        r?;
    }
    Ok(report)
}

async fn forget_cluster(
    repo: &Repository,
    policy: &Policy,
    cluster: &str,
    keep_pitr: Option<Duration>,
    dry_run: bool,
    report: &mut ForgetReport,
) -> Result<()> {
    let all = repo.manifests(cluster).await?;
    let triples: Vec<(String, String, DateTime<Utc>)> = all.iter().map(|(id, m)| (id.clone(), m.cluster.clone(), manifest_time(m))).collect();
    let mut decisions = retention::apply(policy, &triples);
    // (revision, finish time) of every backup, by id.
    let facts: HashMap<&str, (i64, DateTime<Utc>)> = all.iter().zip(&triples).map(|((id, m), t)| (id.as_str(), (m.snapshot.revision, t.2))).collect();
    let rev_of = |id: &str| facts[id].0;
    let kept: Vec<(i64, DateTime<Utc>)> = decisions.iter().filter(|d| d.keep).map(|d| facts[d.id.as_str()]).collect();
    let everything: Vec<(i64, DateTime<Utc>)> = facts.values().copied().collect();
    let now = Utc::now();
    let wanted = delta_floor(&everything, &kept, keep_pitr, now);
    let records = retention_records(repo, cluster).await?;
    let recorded = records.iter().map(|(_, r)| r.delta_floor).max();
    // The floor in force after this forget: its own, or a higher one recorded earlier.
    let floor = floor_in_force(wanted, &records, kept.iter().map(|k| k.0).max());
    // A floor other than the oldest kept backup stands on a backup of the window: restores
    // into the window replay from it (the segments before it are gone, or go), so the policy
    // may not drop it (the newest backup of that revision).
    if let (Some(f), Some(oldest)) = (floor, kept.iter().map(|k| k.0).min()) {
        if f != oldest {
            let base = decisions.iter_mut().filter(|d| rev_of(&d.id) == f).max_by(|a, b| a.time.cmp(&b.time));
            if let Some(d) = base {
                if !d.keep {
                    d.keep = true;
                    d.reasons.push("pitr base".into());
                }
            }
        }
    }
    let segs = delta::list_segments(repo, cluster).await?;
    let remove = below(&segs, floor);
    report.deltas.push(DeltaRetention { cluster: cluster.to_string(), floor, keep: segs.len() - remove.len(), remove });
    if dry_run {
        report.decisions.extend(decisions);
        return Ok(());
    }
    if let (Some(w), Some(pitr)) = (wanted, keep_pitr) {
        if Some(w) != kept.iter().map(|k| k.0).min() && recorded.is_none_or(|r| w > r) {
            let rec = RetentionRecord { cluster: cluster.to_string(), time: crate::now_rfc3339(), keep_pitr_seconds: pitr.as_secs(), delta_floor: w };
            let name = format!("{}/{}-{}", format::cluster_path(cluster, "retention"), now.format("%Y%m%dT%H%M%SZ"), &format::random_name()[..8]);
            repo.put_new(&ObjPath::from(name), Bytes::from(repo.seal_json(&rec, b"retention"))).await?;
        }
    }
    for d in decisions.iter().filter(|d| !d.keep) {
        match repo.delete(&format::manifest_path(cluster, &d.id)).await {
            Ok(()) => report.removed.push(d.id.clone()),
            Err(Error::Refused(why)) => report.refused.push((d.id.clone(), why)),
            Err(e) => return Err(e),
        }
    }
    report.decisions.extend(decisions);
    Ok(())
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PruneReport {
    pub manifests: usize,
    pub packs_total: usize,
    pub packs_deleted: usize,
    pub packs_repacked: usize,
    pub packs_unindexed: usize,
    pub bytes_deleted: u64,
    pub bytes_written: u64,
    pub index_files_replaced: usize,
    pub clusters: usize,
    /// Delta segments deleted (at or below their cluster's delta floor), and their bytes.
    pub segments_deleted: usize,
    pub segment_bytes_deleted: u64,
    /// The segments deleted (or, in a dry run, to delete).
    pub segments: Vec<SegmentRef>,
    /// Objects the bucket refused to delete (object lock).
    pub refused: Vec<String>,
    pub dry_run: bool,
}

/// Every blob id a manifest needs.
pub async fn referenced(repo: &Repository, manifests: &[(String, Manifest)], index: &crate::repository::Index) -> Result<HashSet<BlobId>> {
    let mut used = HashSet::new();
    for (id, m) in manifests {
        for l in m.list_blobs() {
            used.insert(parse_id(l)?);
        }
        let ids = repo.chunk_ids(m, index).await.map_err(|e| Error::Damaged(format!("backup {}: {e}", crate::short(id))))?;
        used.extend(ids);
        for s in m.key_map.iter().flat_map(|k| k.blobs()) {
            used.insert(parse_id(s)?);
        }
        if let Some(b) = &m.bundle {
            used.insert(parse_id(&b.table)?);
            for c in &b.blobs {
                used.insert(parse_id(c)?);
            }
        }
    }
    Ok(used)
}

/// `keep_unindexed`: packs no index names are removed only when older than this (they are
/// left by interrupted backups; a young one may belong to a backup whose lock was wrongly
/// judged stale). One cluster, or each in turn, under its exclusive lock.
pub async fn prune(repo: Arc<Repository>, cluster: Option<&str>, max_unused: f64, dry_run: bool, keep_unindexed: Duration) -> Result<PruneReport> {
    let mut total = PruneReport { dry_run, ..Default::default() };
    for c in scope(&repo, cluster).await? {
        let lock = repo.lock(&c, true, "prune").await?;
        let r = prune_locked(repo.clone(), &c, max_unused, dry_run, keep_unindexed, &lock).await;
        lock.release().await;
        let r = r?;
        total.clusters += 1;
        total.manifests += r.manifests;
        total.packs_total += r.packs_total;
        total.packs_deleted += r.packs_deleted;
        total.packs_repacked += r.packs_repacked;
        total.packs_unindexed += r.packs_unindexed;
        total.bytes_deleted += r.bytes_deleted;
        total.bytes_written += r.bytes_written;
        total.index_files_replaced += r.index_files_replaced;
        total.segments_deleted += r.segments_deleted;
        total.segment_bytes_deleted += r.segment_bytes_deleted;
        total.segments.extend(r.segments);
        total.refused.extend(r.refused);
    }
    Ok(total)
}

async fn prune_locked(
    repo: Arc<Repository>,
    cluster: &str,
    max_unused: f64,
    dry_run: bool,
    keep_unindexed: Duration,
    lock: &crate::lock::Lock,
) -> Result<PruneReport> {
    let index = repo.load_index(cluster).await?;
    let manifests = repo.manifests(cluster).await?;
    let used = referenced(&repo, &manifests, &index).await?;
    let listed = repo.list(&format::cluster_path(cluster, "data")).await?;
    let mut report = PruneReport { manifests: manifests.len(), packs_total: listed.len(), dry_run, ..Default::default() };
    let revs: Vec<i64> = manifests.iter().map(|(_, m)| m.snapshot.revision).collect();
    let (floor, records) = effective_floor(&repo, cluster, &revs).await?;
    let segs = delta::list_segments(&repo, cluster).await?;
    let drop_segs = below(&segs, floor);
    report.segments_deleted = drop_segs.len();
    report.segment_bytes_deleted = drop_segs.iter().map(|s| s.size).sum();
    report.segments = drop_segs.clone();

    let mut delete: Vec<(ObjPath, u64)> = Vec::new();
    let mut keep: Vec<IndexPack> = Vec::new();
    let mut repack: Vec<(BlobId, Vec<format::PackEntry>)> = Vec::new();
    let mut sizes: HashMap<String, u64> = HashMap::new();
    for m in &listed {
        let name = m.location.filename().unwrap_or_default().to_string();
        sizes.insert(name.clone(), m.size);
        let Ok(id) = parse_id(&name) else { continue };
        match index.packs.get(&id) {
            None => {
                let age = chrono::Utc::now().signed_duration_since(m.last_modified).to_std().unwrap_or_default();
                if age >= keep_unindexed {
                    report.packs_unindexed += 1;
                    delete.push((m.location.clone(), m.size));
                }
            }
            Some(entries) => {
                let total: u64 = entries.iter().map(|e| e.length as u64).sum();
                let live: u64 = entries.iter().filter(|e| used.contains(&e.id)).map(|e| e.length as u64).sum();
                if live == 0 {
                    delete.push((m.location.clone(), m.size));
                } else if total > 0 && (total - live) as f64 / total as f64 > max_unused {
                    repack.push((id, entries.clone()));
                    delete.push((m.location.clone(), m.size));
                } else {
                    keep.push(IndexPack { pack: id, entries: entries.clone() });
                }
            }
        }
    }
    // Index entries whose pack object is gone are dropped from the new index (check reports
    // them if a manifest needs them).
    report.packs_deleted = delete.len() - repack.len();
    report.packs_repacked = repack.len();
    report.bytes_deleted = delete.iter().map(|(_, s)| s).sum();
    if dry_run {
        return Ok(report);
    }
    if delete.is_empty() {
        // Nothing to free: leave the index objects as they are (rewriting them would only
        // grow a bucket that refuses deletes).
        prune_segments(&repo, lock, &drop_segs, &records, &mut report).await?;
        return Ok(report);
    }

    // Copy live blobs out of packs being repacked.
    if !repack.is_empty() {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let packer = tokio::spawn(crate::backup::packer(repo.clone(), cluster.to_string(), rx, 4));
        // Blobs a kept pack already holds need no copy.
        let mut copied: HashSet<BlobId> = keep.iter().flat_map(|p| p.entries.iter().map(|e| e.id)).collect();
        for (pack, entries) in &repack {
            let name = hex::encode(pack);
            let live: Vec<_> = entries.iter().filter(|e| used.contains(&e.id) && copied.insert(e.id)).copied().collect();
            let ranges: Vec<_> = live.iter().map(|e| e.offset as u64..e.offset as u64 + e.length as u64).collect();
            let parts = repo.store().get_ranges(&index.pack_path(pack), &ranges).await.map_err(|e| Error::store(format!("read pack {name}"), e))?;
            for (e, sealed) in live.iter().zip(parts) {
                if !e.blob_type.uses_bundle_key() {
                    repo.open_blob(e, &sealed, &name)?;
                }
                let msg =
                    crate::backup::ToPacker::Blobs(vec![crate::backup::Sealed { t: e.blob_type, id: e.id, plain_len: e.plain_len, sealed: sealed.to_vec() }]);
                tx.send(msg).await.map_err(|_| Error::Other("packer stopped".into()))?;
            }
        }
        drop(tx);
        let (packs, added, _) = packer.await.map_err(|e| Error::Other(format!("packer: {e}")))??;
        report.bytes_written = added;
        keep.extend(packs);
    }
    // One index for everything kept, then the old ones go; only while our lock stands.
    lock.verify().await?;
    let new_index = repo.write_index(cluster, &keep).await?;
    let mut index_refused = false;
    for f in index.files.iter().filter(|f| **f != new_index) {
        match repo.delete(&ObjPath::from(format!("{}/{f}", format::cluster_path(cluster, "index")))).await {
            Ok(()) => report.index_files_replaced += 1,
            Err(Error::Refused(why)) => {
                index_refused = true;
                report.refused.push(why);
            }
            Err(e) => return Err(e),
        }
    }
    if index_refused {
        // Old indexes still name the packs: deleting them now would leave dangling entries.
        report.refused.push(format!("{} pack(s) kept because their old index objects could not be deleted", delete.len()));
        report.packs_deleted = 0;
        report.packs_repacked = 0;
        report.bytes_deleted = 0;
        return Ok(report);
    }
    let results: Vec<Result<()>> = futures::future::join_all(delete.iter().map(|(p, _)| repo.delete(p))).await;
    for r in results {
        match r {
            Ok(()) => {}
            Err(Error::Refused(why)) => report.refused.push(why),
            Err(e) => return Err(e),
        }
    }
    prune_segments(&repo, lock, &drop_segs, &records, &mut report).await?;
    Ok(report)
}

/// Delete the segments below the floor, then every retention record but the newest.
async fn prune_segments(
    repo: &Repository,
    lock: &crate::lock::Lock,
    segs: &[SegmentRef],
    records: &[(ObjPath, RetentionRecord)],
    report: &mut PruneReport,
) -> Result<()> {
    if segs.is_empty() && records.len() <= 1 {
        return Ok(());
    }
    lock.verify().await?;
    let paths: Vec<ObjPath> = segs.iter().map(|s| ObjPath::from(s.name.as_str())).collect();
    let results: Vec<Result<()>> = futures::future::join_all(paths.iter().map(|p| repo.delete(p))).await;
    for r in results {
        match r {
            Ok(()) => {}
            Err(Error::Refused(why)) => report.refused.push(why),
            Err(e) => return Err(e),
        }
    }
    // The newest record carries the highest floor forget ever decided (floors only rise).
    let newest = records.iter().max_by_key(|(_, r)| r.delta_floor).map(|(p, _)| p.clone());
    for (p, _) in records.iter().filter(|(p, _)| Some(p) != newest.as_ref()) {
        match repo.delete(p).await {
            Ok(()) | Err(Error::Refused(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, h, 0, 0).unwrap()
    }

    #[test]
    fn floor_is_the_oldest_backup_or_the_window_base() {
        let all = vec![(100, at(1)), (200, at(5)), (300, at(9))];
        let now = at(12);
        assert_eq!(delta_floor(&all, &all, None, now), Some(100));
        // A 4-hour window starts at 08:00: the newest backup finished by then is at 200, so
        // restores into 08:00..12:00 replay from it; segments up to 200 go.
        assert_eq!(delta_floor(&all, &all, Some(Duration::from_secs(4 * 3600)), now), Some(200));
        // ... also when the policy keeps only the newest: forget then keeps 200 as the base.
        assert_eq!(delta_floor(&all, &all[2..], Some(Duration::from_secs(4 * 3600)), now), Some(200));
        // A window reaching before every backup keeps everything from the oldest, also when
        // the policy would drop it.
        assert_eq!(delta_floor(&all, &all, Some(Duration::from_secs(20 * 3600)), now), Some(100));
        assert_eq!(delta_floor(&all, &all[1..], Some(Duration::from_secs(20 * 3600)), now), Some(100));
        // A window shorter than the newest backup's age: the newest is the base.
        assert_eq!(delta_floor(&all, &all, Some(Duration::from_secs(3600)), now), Some(300));
        assert_eq!(delta_floor(&all, &[], None, now), None);
    }

    #[test]
    fn segments_below_the_floor_go_whole() {
        let seg = |first: i64, last: i64| SegmentRef {
            name: format!("clusters/c/deltas/{first:020}-{last:020}-0000000000000000"),
            first,
            last,
            hash: "0".repeat(16),
            size: 1,
        };
        let segs = vec![seg(101, 150), seg(151, 210), seg(211, 260)];
        // 200 lies inside the second segment: it stays whole.
        assert_eq!(below(&segs, Some(200)).iter().map(|s| s.last).collect::<Vec<_>>(), vec![150]);
        assert_eq!(below(&segs, Some(210)).len(), 2);
        assert_eq!(below(&segs, None).len(), 3);
    }
}
