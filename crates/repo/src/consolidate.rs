//! Consolidated full backups: the newest backup of a cluster plus the delta segments after it,
//! replayed offline into one snapshot file and stored as a full backup, so point-in-time
//! restores replay a bounded chain and no full snapshot has to be pulled from etcd.
//!
//! The replay is the point-in-time restore's ([`crate::pitr`]); the file is then backed up
//! as any snapshot ([`crate::backup`]): chunked and deduplicated against the cluster's packs
//! (most pages are unchanged since the base), with `hash_kv` and the live key count computed
//! from the file. The manifest says it was consolidated, from which backup, over which
//! revisions. Everything runs under one shared lock on the cluster.
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use crate::backup::{BackupOptions, BackupReport, Progress};
use crate::error::{Error, Result};
use crate::format::Consolidated;
use crate::pitr::{PitrOptions, Target};
use crate::repository::Repository;

#[derive(Debug, Clone)]
pub struct ConsolidateOptions {
    pub cluster: String,
    /// Stop at this revision (default: the end of the contiguous chain after the newest backup).
    pub at_revision: Option<i64>,
    /// Where to build the file (default: the system temporary directory).
    pub work_dir: Option<PathBuf>,
    pub parallel: usize,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConsolidateReport {
    pub backup: BackupReport,
    pub base: String,
    pub base_revision: i64,
    pub to_revision: i64,
    pub segments: usize,
    pub revisions_replayed: u64,
    pub seconds: f64,
}

/// How much of a cluster's chain lies after its newest backup: what the agent's trigger reads.
#[derive(Debug, Clone, Serialize)]
pub struct ChainSince {
    pub base: String,
    pub base_revision: i64,
    pub base_time: String,
    /// Contiguous segments after the base, their bytes, and the last revision they reach.
    pub segments: usize,
    pub bytes: u64,
    pub to_revision: i64,
}

/// The chain after the newest backup (by revision) of `cluster`.
pub async fn chain_since_newest(repo: &Repository, cluster: &str) -> Result<ChainSince> {
    let r = crate::pitr::chain_report(repo, cluster, None).await?;
    let segs: Vec<_> = r.chain.segments.iter().filter(|s| s.last > r.base_revision).collect();
    Ok(ChainSince {
        base: r.base,
        base_revision: r.base_revision,
        base_time: r.base_time,
        segments: segs.len(),
        bytes: segs.iter().map(|s| s.size).sum(),
        to_revision: r.chain.contiguous_to,
    })
}

/// Build and store a consolidated backup of `o.cluster`.
pub async fn consolidate(repo: Arc<Repository>, o: &ConsolidateOptions, progress: Progress) -> Result<ConsolidateReport> {
    let started = std::time::Instant::now();
    repo.known_cluster(&o.cluster).await?;
    let lock = repo.lock(&o.cluster, false, "consolidate").await?;
    let r = consolidate_locked(&repo, o, &lock, progress).await;
    lock.release().await;
    let mut r = r?;
    r.seconds = started.elapsed().as_secs_f64();
    Ok(r)
}

async fn consolidate_locked(repo: &Arc<Repository>, o: &ConsolidateOptions, lock: &crate::lock::Lock, progress: Progress) -> Result<ConsolidateReport> {
    let since = chain_since_newest(repo, &o.cluster).await?;
    let target = match o.at_revision {
        Some(r) => r,
        None => since.to_revision,
    };
    if target <= since.base_revision {
        // A backup at or before the newest one would become `latest` (it is made now) while
        // holding older data: refused.
        return Err(match o.at_revision {
            None => Error::Missing(format!(
                "nothing to consolidate: no delta segment of cluster {} reaches past its newest backup {} (revision {})",
                o.cluster,
                crate::short(&since.base),
                since.base_revision
            )),
            Some(r) => Error::Usage(format!(
                "revision {r} is not after the newest backup {} of cluster {} (revision {}): a consolidated backup must be newer than every backup",
                crate::short(&since.base),
                o.cluster,
                since.base_revision
            )),
        });
    }
    if target > since.to_revision {
        return Err(Error::Missing(format!(
            "revision {target} is past the end of cluster {}'s contiguous delta chain (revision {})",
            o.cluster, since.to_revision
        )));
    }
    let base_dir = o.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let tmp = crate::scratch::Scratch::new(&base_dir, "quorum-consolidate-")?;
    let p = PitrOptions { cluster: o.cluster.clone(), target: Target::Revision(target), base: None, parallel: o.parallel };
    let rp = crate::pitr::replay_to_file(repo, &p, tmp.path(), progress.clone()).await?;
    if rp.replay.revisions == 0 {
        return Err(Error::Missing(format!(
            "nothing to consolidate: backup {} is already at revision {}",
            crate::short(&rp.base_id),
            rp.base.snapshot.revision
        )));
    }
    let c = Consolidated {
        base: rp.base_id.clone(),
        base_revision: rp.base.snapshot.revision,
        to_revision: rp.target_revision,
        segments: rp.segments,
        revisions: rp.replay.revisions,
    };
    let mut tags = o.tags.clone();
    tags.push("consolidated".into());
    let opts = BackupOptions {
        snapshot: rp.db.clone(),
        cluster: o.cluster.clone(),
        tags,
        includes: Vec::new(),
        cluster_id: rp.base.cluster_id.clone(),
        member_id: None,
        member: None,
        etcd_version: rp.base.etcd_version.clone(),
        source: format!("consolidated:{}", rp.base_id),
        uploads: 4,
        consolidated: Some(c),
        ..Default::default()
    };
    let backup = crate::backup::backup_locked(repo.clone(), &opts, lock, progress).await?;
    if backup.manifest.snapshot.revision != rp.target_revision {
        // The file's own revision is the last one with events; a target without events
        // (a revision bump) is reported as what the file holds.
        eprintln!("Note: the consolidated file's last revision with events is {} (asked {})", backup.manifest.snapshot.revision, rp.target_revision);
    }
    Ok(ConsolidateReport {
        base: rp.base_id,
        base_revision: rp.base.snapshot.revision,
        to_revision: rp.target_revision,
        segments: rp.segments,
        revisions_replayed: rp.replay.revisions,
        seconds: 0.0,
        backup,
    })
}
