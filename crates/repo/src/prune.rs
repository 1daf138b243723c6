//! `quorum forget` (remove manifests a retention policy does not keep) and `quorum prune`
//! (remove data no manifest references).
//!
//! Prune holds the exclusive lock, so no backup is running: every pack that no index names is
//! left over from an interrupted backup and is removed. Packs whose blobs are all unreferenced
//! are removed; packs with more than `max_unused` of their bytes unreferenced are repacked
//! (their live blobs copied, still sealed, into new packs). Order: new packs, one new index
//! for everything kept, then the old index objects are deleted, and only when all of those
//! are gone the packs. A kill at any point leaves every manifest's blobs reachable.
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path as ObjPath;

use crate::error::{Error, Result};
use crate::format::{self, BlobId, IndexPack, Manifest};
use crate::lock;
use crate::repository::{parse_id, Repository};
use crate::retention::{self, Decision, Policy};

#[derive(Debug, Clone, serde::Serialize)]
pub struct ForgetReport {
    pub decisions: Vec<Decision>,
    pub removed: Vec<String>,
    /// Manifests the bucket refused to delete (object lock), with the store's words.
    pub refused: Vec<(String, String)>,
    pub dry_run: bool,
}

/// Apply `policy` (to one cluster, or all) and delete the manifests it does not keep.
pub async fn forget(repo: &Repository, policy: &Policy, cluster: Option<&str>, dry_run: bool, retry: Duration) -> Result<ForgetReport> {
    if policy.is_empty() {
        return Err(Error::Usage(
            "give a retention policy: --keep-last, --keep-hourly, --keep-daily, --keep-weekly and/or --keep-monthly".into(),
        ));
    }
    let lock = if dry_run { None } else { Some(lock::acquire(repo, false, "forget", retry).await?) };
    let result = async {
        let all = repo.manifests().await?;
        let triples: Vec<(String, String, chrono::DateTime<chrono::Utc>)> = all
            .iter()
            .filter(|(_, m)| cluster.is_none_or(|c| m.cluster == c))
            .map(|(id, m)| {
                let t = chrono::DateTime::parse_from_rfc3339(&m.time).map(|t| t.with_timezone(&chrono::Utc)).unwrap_or_default();
                (id.clone(), m.cluster.clone(), t)
            })
            .collect();
        let decisions = retention::apply(policy, &triples);
        let mut removed = Vec::new();
        let mut refused = Vec::new();
        if !dry_run {
            for d in decisions.iter().filter(|d| !d.keep) {
                match repo.delete(&ObjPath::from(format!("snapshots/{}", d.id))).await {
                    Ok(()) => removed.push(d.id.clone()),
                    Err(Error::Refused(why)) => refused.push((d.id.clone(), why)),
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(ForgetReport { decisions, removed, refused, dry_run })
    }
    .await;
    if let Some(l) = lock {
        l.release().await;
    }
    result
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
    /// Objects the bucket refused to delete (object lock).
    pub refused: Vec<String>,
    pub dry_run: bool,
}

/// Every blob id a manifest needs.
pub async fn referenced(repo: &Repository, manifests: &[(String, Manifest)], index: &crate::repository::Index) -> Result<HashSet<BlobId>> {
    let mut used = HashSet::new();
    for (id, m) in manifests {
        for l in &m.chunk_lists {
            used.insert(parse_id(l)?);
        }
        let ids = repo.chunk_ids(m, index).await.map_err(|e| Error::Damaged(format!("backup {}: {e}", crate::short(id))))?;
        used.extend(ids);
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
/// judged stale).
pub async fn prune(repo: Arc<Repository>, max_unused: f64, dry_run: bool, retry: Duration, keep_unindexed: Duration) -> Result<PruneReport> {
    let lock = lock::acquire(&repo, true, "prune", retry).await?;
    let r = prune_locked(repo.clone(), max_unused, dry_run, keep_unindexed, &lock).await;
    lock.release().await;
    r
}

async fn prune_locked(repo: Arc<Repository>, max_unused: f64, dry_run: bool, keep_unindexed: Duration, lock: &lock::Lock) -> Result<PruneReport> {
    let index = repo.load_index().await?;
    let manifests = repo.manifests().await?;
    let used = referenced(&repo, &manifests, &index).await?;
    let listed = repo.list("data").await?;
    let mut report = PruneReport { manifests: manifests.len(), packs_total: listed.len(), dry_run, ..Default::default() };

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
        return Ok(report);
    }

    // Copy live blobs out of packs being repacked.
    if !repack.is_empty() {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let packer = tokio::spawn(crate::backup::packer(repo.clone(), rx, 4));
        // Blobs a kept pack already holds need no copy.
        let mut copied: HashSet<BlobId> = keep.iter().flat_map(|p| p.entries.iter().map(|e| e.id)).collect();
        for (pack, entries) in &repack {
            let name = hex::encode(pack);
            let live: Vec<_> = entries.iter().filter(|e| used.contains(&e.id) && copied.insert(e.id)).copied().collect();
            let ranges: Vec<_> = live.iter().map(|e| e.offset as u64..e.offset as u64 + e.length as u64).collect();
            let parts = repo.store().get_ranges(&format::pack_path(&name), &ranges).await.map_err(|e| Error::store(format!("read pack {name}"), e))?;
            for (e, sealed) in live.iter().zip(parts) {
                if !e.blob_type.uses_bundle_key() {
                    repo.open_blob(e, &sealed, &name)?;
                }
                let msg = crate::backup::ToPacker::Blobs(vec![crate::backup::Sealed { t: e.blob_type, id: e.id, plain_len: e.plain_len, sealed: sealed.to_vec() }]);
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
    let new_index = repo.write_index(&keep).await?;
    let mut index_refused = false;
    for f in index.files.iter().filter(|f| **f != new_index) {
        match repo.delete(&ObjPath::from(format!("index/{f}"))).await {
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
    Ok(report)
}
