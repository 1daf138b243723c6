//! `quorum repo check [--cluster C] [--read-data]`: each cluster under a shared lock (a prune
//! cannot remove what is being checked), one after another.
//!
//! Without `--read-data`: every index object authenticates and matches its name; every
//! manifest authenticates; every blob a manifest needs (chunk lists, chunks, bundle blobs) is
//! in an index, and its pack exists and is long enough. With `--read-data`: every pack is
//! downloaded, its SHA-256 compared with its name, its header compared with the index, and
//! every blob decrypted, decompressed and compared with its id. Each problem names the
//! object, and for a damaged blob the backups that need it.
//!
//! Delta chains: from the cluster's delta floor to its last captured revision no revision may
//! be missing (a gap names the revisions lost and the segments around it); with
//! `--read-data` every segment is downloaded and opened (name hash, AEAD, header, records).
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;

use crate::error::{Error, Result};
use crate::format::{self, BlobId};
use crate::repository::{parse_id, Repository};

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CheckReport {
    pub clusters: usize,
    pub backups: usize,
    /// Delta segments listed, and read (`--read-data`).
    pub segments: usize,
    pub segments_read: usize,
    pub index_files: usize,
    pub packs: usize,
    pub blobs: usize,
    pub packs_read: usize,
    pub bytes_read: u64,
    /// Problems that make a backup unrestorable or the repository inconsistent.
    pub errors: Vec<String>,
    /// Harmless findings (leftovers of an interrupted backup).
    pub notes: Vec<String>,
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.errors.is_empty()
    }
}

pub async fn check(repo: Arc<Repository>, cluster: Option<&str>, read_data: bool, progress: crate::restore::Progress) -> Result<CheckReport> {
    let mut r = CheckReport::default();
    let clusters = match cluster {
        Some(c) => {
            // A cluster whose backups were all forgotten, packs or segments left, is still
            // worth checking; a name the repository never held is an error.
            repo.cluster_exists(c).await?;
            vec![c.to_string()]
        }
        None => repo.clusters().await?,
    };
    for c in clusters {
        let lock = repo.lock(&c, false, "check").await?;
        let res = check_cluster(repo.clone(), &c, read_data, progress.clone(), &mut r).await;
        lock.release().await;
        res?;
        r.clusters += 1;
    }
    r.errors.sort();
    Ok(r)
}

async fn check_cluster(repo: Arc<Repository>, cluster: &str, read_data: bool, progress: crate::restore::Progress, r: &mut CheckReport) -> Result<()> {
    // Manifests are listed before the index is read: a backup finishing meanwhile writes its
    // index before its manifest, so every manifest seen here has its index in what follows.
    let metas = repo.backup_ids(cluster).await?;
    // Damaged index objects are reported; the others are checked.
    let index = repo.load_index_noting(cluster, &mut |e| r.errors.push(e.to_string())).await?;
    r.index_files += index.files.len();
    let listed = repo.list(&format::cluster_path(cluster, "data")).await?;
    let sizes: HashMap<String, u64> = listed.iter().filter_map(|m| Some((m.location.filename()?.to_string(), m.size))).collect();
    r.packs += sizes.len();
    r.blobs += index.blobs.len();

    // Packs named by the index exist and are long enough.
    let mut missing_packs: HashSet<BlobId> = HashSet::new();
    for (pack, entries) in &index.packs {
        let name = hex::encode(pack);
        match sizes.get(&name) {
            None => {
                missing_packs.insert(*pack);
            }
            Some(size) => {
                let end = entries.iter().map(|e| e.offset as u64 + e.length as u64).max().unwrap_or(0);
                if end > *size {
                    r.errors.push(format!("pack {name}: {size} bytes, but the index has blobs up to byte {end} (truncated)"));
                }
            }
        }
    }
    let unindexed = sizes.keys().filter(|n| parse_id(n).map(|id| !index.packs.contains_key(&id)).unwrap_or(true)).count();
    if unindexed > 0 {
        r.notes.push(format!("{unindexed} pack(s) not named by any index (left by an interrupted backup; `quorum prune` removes them)"));
    }

    // Manifests and what they need.
    let mut needed_by: HashMap<BlobId, Vec<String>> = HashMap::new();
    let mut backups: Vec<(String, i64)> = Vec::new();
    for id in metas {
        r.backups += 1;
        let man = match repo.read_manifest(cluster, &id).await {
            Ok(m) => m,
            // Forgotten meanwhile: not damage.
            Err(Error::Missing(_)) => {
                r.backups -= 1;
                continue;
            }
            Err(e @ Error::Store { .. }) => return Err(e),
            Err(e) => {
                r.errors.push(format!("backup {}: {e}", crate::short(&id)));
                continue;
            }
        };
        backups.push((id.clone(), man.snapshot.revision));
        let short = format!("{} ({}, {})", crate::short(&id), man.cluster, man.time);
        let mut ids: Vec<BlobId> = Vec::new();
        for l in man.list_blobs() {
            ids.push(parse_id(l)?);
        }
        match repo.chunk_ids(&man, &index).await {
            Ok(c) => ids.extend(c),
            Err(e @ Error::Store { .. }) => return Err(e),
            Err(e) => r.errors.push(format!("backup {short}: chunk list: {e}")),
        }
        for s in man.key_map.iter().flat_map(|k| k.blobs()) {
            ids.push(parse_id(s)?);
        }
        if let Some(b) = &man.bundle {
            ids.push(parse_id(&b.table)?);
            for c in &b.blobs {
                ids.push(parse_id(c)?);
            }
        }
        let mut absent = 0usize;
        let mut first = None;
        for bid in ids {
            match index.blobs.get(&bid) {
                None => {
                    absent += 1;
                    first.get_or_insert(format!("blob {} is in no index", hex::encode(bid)));
                }
                Some(loc) if missing_packs.contains(&loc.pack) => {
                    absent += 1;
                    first.get_or_insert(format!("blob {} is in pack {}, which is missing", hex::encode(bid), hex::encode(loc.pack)));
                }
                Some(_) => needed_by.entry(bid).or_default().push(short.clone()),
            }
        }
        if absent > 0 {
            r.errors.push(format!("backup {short}: {absent} blob(s) missing; first: {}", first.unwrap()));
        }
    }
    for p in &missing_packs {
        if index.packs[p].iter().any(|e| needed_by.contains_key(&e.id)) {
            continue; // already reported per backup
        }
        r.notes.push(format!("pack {} is named by an index but missing; no backup needs it", hex::encode(p)));
    }

    if read_data {
        let total: u64 = sizes.values().sum();
        let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let names: Vec<String> = sizes.keys().cloned().collect();
        let results: Vec<(u64, Vec<String>, bool)> = futures::stream::iter(names)
            .map(|name| {
                let repo = repo.clone();
                let index_entries = parse_id(&name).ok().and_then(|id| index.packs.get(&id).cloned());
                let indexed = index_entries.is_some();
                let needed_by = &needed_by;
                let done = done.clone();
                let progress = progress.clone();
                async move {
                    let bytes = match repo.get(&format::pack_path(cluster, &name)).await {
                        Ok(b) => b,
                        Err(e) => return (0, vec![format!("pack {name}: {e}")], indexed),
                    };
                    let n = bytes.len() as u64;
                    let name2 = name.clone();
                    let repo2 = repo.clone();
                    let problems = tokio::task::spawn_blocking(move || read_pack(&repo2, &name2, &bytes, index_entries.as_deref()))
                        .await
                        .unwrap_or_else(|e| vec![(None, format!("pack {name}: {e}"))]);
                    let d = done.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n;
                    progress(d, total);
                    let lines = problems
                        .into_iter()
                        .map(|(blob, p)| match blob.and_then(|b| needed_by.get(&b)) {
                            Some(backups) => format!("{p}; needed by backup(s) {}", backups.join(", ")),
                            None => p,
                        })
                        .collect();
                    (n, lines, indexed)
                }
            })
            .buffer_unordered(4)
            .collect()
            .await;
        for (n, lines, indexed) in results {
            r.packs_read += 1;
            r.bytes_read += n;
            if indexed {
                r.errors.extend(lines);
            } else {
                // No index names it, so no backup can use it: worth knowing, not damage.
                r.notes.extend(lines.into_iter().map(|l| format!("{l} (no backup uses this pack)")));
            }
        }
    }
    check_deltas(&repo, cluster, &backups, read_data, r).await
}

/// The delta chain of `cluster` (its backups: id, revision): gaps from the floor to the end,
/// and with `read_data` every segment opened.
async fn check_deltas(repo: &Repository, cluster: &str, backups: &[(String, i64)], read_data: bool, r: &mut CheckReport) -> Result<()> {
    let revisions: Vec<i64> = backups.iter().map(|b| b.1).collect();
    let revisions = revisions.as_slice();
    let segs = crate::delta::list_segments(repo, cluster).await?;
    r.segments += segs.len();
    if segs.is_empty() {
        return Ok(());
    }
    let floor = crate::prune::floor_for(repo, cluster, revisions).await?;
    let first = segs.iter().map(|s| s.first).min().unwrap_or(1);
    // Where the chain must start: one past the floor, or, when segments begin later (capture
    // started after older backups), one past the newest backup before the first segment.
    let start = match floor {
        None => first,
        Some(f) if first <= f + 1 => f + 1,
        Some(_) => {
            let base = revisions.iter().copied().filter(|&v| v < first).max();
            match base {
                Some(b) if b + 1 < first => {
                    r.errors.push(format!(
                        "cluster {cluster}: delta chain: revisions {}..{} are missing: the first segment starts at {first}, the backup before it is at revision {b} (segment deleted?)",
                        b + 1,
                        first - 1
                    ));
                    first
                }
                Some(b) => b + 1,
                None => first,
            }
        }
    };
    let chain = crate::delta::plan_chain(&segs, start, None);
    for g in &chain.gaps {
        // A capture that ended (etcd compacted past it) is followed by a full backup and a new
        // capture after it: revisions up to that backup were never captured, which is how the
        // agent works, not damage. Every other gap lost segments.
        // Told apart from a deleted segment that happened to end at a backup's revision by the
        // segment after the gap: a restarted capture names that backup as its base.
        let restarted = match segs.iter().find(|s| s.first == g.to + 1) {
            Some(next) if revisions.contains(&g.to) => match crate::delta::read_segment(repo, &next.name).await {
                Ok(seg) => backups.iter().any(|(id, rev)| *rev == g.to && *id == seg.header.base),
                Err(e @ Error::Store { .. }) => return Err(e),
                Err(_) => false, // reported with --read-data
            },
            _ => false,
        };
        if restarted {
            r.notes.push(format!(
                "cluster {cluster}: delta chain: {g} {} not captured (the capture restarted after the backup at revision {}); point-in-time restores into them are impossible",
                g.were(),
                g.to
            ));
            continue;
        }
        let before = segs.iter().filter(|s| s.last < g.from).max_by_key(|s| s.last).map(|s| s.name.as_str()).unwrap_or("(none)");
        let after = segs.iter().filter(|s| s.first > g.to).min_by_key(|s| s.first).map(|s| s.name.as_str()).unwrap_or("(none)");
        r.errors.push(format!(
            "cluster {cluster}: delta chain: {g} {} missing (point-in-time restores into them are impossible); the segments around the gap: {before} and {after}",
            g.are()
        ));
    }
    if read_data {
        let results: Vec<(&crate::delta::SegmentRef, Result<()>)> = futures::stream::iter(&segs)
            .map(|s| async move { (s, crate::delta::read_segment(repo, &s.name).await.map(|_| ())) })
            .buffer_unordered(8)
            .collect()
            .await;
        for (s, res) in results {
            r.segments_read += 1;
            match res {
                Ok(()) => {}
                Err(e @ Error::Store { .. }) => return Err(e),
                Err(e) => r.errors.push(format!("cluster {cluster}: delta segment {} (revisions {}..{} lost): {e}", s.name, s.first, s.last)),
            }
        }
    }
    Ok(())
}

/// Problems found in one downloaded pack, each with the blob it concerns.
fn read_pack(repo: &Repository, name: &str, bytes: &[u8], indexed: Option<&[format::PackEntry]>) -> Vec<(Option<BlobId>, String)> {
    let mut out = Vec::new();
    if format::content_name(bytes) != name {
        out.push((None, format!("pack {name}: content does not match its name (damaged or tampered)")));
    }
    let entries = match format::decode_pack(repo.data_key(), bytes) {
        Ok(e) => e,
        Err(e) => {
            // Fall back to the index's view to name the blobs inside.
            let blobs: Vec<_> = indexed.unwrap_or_default().iter().map(|e| e.id).collect();
            out.push((blobs.first().copied(), format!("pack {name}: {e}")));
            match indexed {
                Some(ix) => ix.to_vec(),
                None => return out,
            }
        }
    };
    if let Some(ix) = indexed {
        if ix != entries.as_slice() {
            out.push((None, format!("pack {name}: header and index disagree")));
        }
    }
    for e in &entries {
        let end = e.offset as usize + e.length as usize;
        if end > bytes.len() {
            out.push((Some(e.id), format!("blob {} in pack {name}: beyond the end of the pack", hex::encode(e.id))));
            continue;
        }
        if e.blob_type.uses_bundle_key() && !repo.has_bundle_key() {
            continue;
        }
        if let Err(err) = repo.open_blob(e, &bytes[e.offset as usize..end], name) {
            out.push((Some(e.id), err.to_string()));
        }
    }
    out
}
