//! A backup of a running cluster: a snapshot saved from a healthy member (through
//! `etcd_cluster::save`), then backed up with the member's identity. The agent schedules it,
//! `quorum backup` and `quorum migrate` run it once.
use std::path::PathBuf;
use std::sync::Arc;

use crate::backup::{BackupOptions, BackupReport, Progress};
use crate::error::{Error, Result};
use crate::Repository;

/// What a live backup takes.
#[derive(Debug, Clone, Default)]
pub struct LiveBackup {
    pub cluster: String,
    /// endpoints, follower, leader, or a member name.
    pub from: String,
    pub tmp_dir: Option<PathBuf>,
    pub tags: Vec<String>,
    pub includes: Vec<PathBuf>,
    pub uploads: usize,
}

/// Save a snapshot from a healthy member into a temporary file (sha256 checked as it
/// arrives), then back it up (the backup takes the cluster's shared lock). The temporary file
/// is needed for the figures computed from it (status, hashkv); memory stays bounded either way.
pub async fn live_backup(cfg: &etcd_cluster::ConnConfig, repo: Arc<Repository>, b: &LiveBackup, progress: Progress) -> Result<BackupReport> {
    let dir = b.tmp_dir.clone().unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::Builder::new().prefix("quorum-backup-").tempdir_in(&dir).map_err(|e| Error::io(&dir, e))?;
    let path = tmp.path().join("snapshot.db");
    let saved = etcd_cluster::save::save(cfg, &path, &etcd_cluster::save::Source::parse(&b.from), &|_| {}).await?;
    let mut opts = BackupOptions {
        cluster: b.cluster.clone(),
        tags: b.tags.clone(),
        includes: b.includes.clone(),
        uploads: b.uploads.max(1),
        snapshot: path,
        source: saved.endpoint.clone(),
        member: Some(saved.member.clone()),
        ..Default::default()
    };
    if let Ok(view) = etcd_cluster::observe(cfg, etcd_cluster::DEFAULT_QUOTA).await {
        if let Some(s) = view.statuses.iter().find(|s| s.endpoint == saved.endpoint) {
            opts.member_id = Some(s.id.clone());
            opts.etcd_version = Some(s.version.clone());
            opts.cluster_id = Some(s.cluster_id.clone());
        }
    }
    let report = crate::backup::backup(repo.clone(), &opts, progress).await?;
    drop(tmp);
    Ok(report)
}
