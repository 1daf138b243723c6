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
    /// A control-plane host's root (`/`): back up as cluster-backup.sh does, the newest
    /// revision of each static pod's resources under `etc/kubernetes/static-pod-resources`
    /// into the bundle, taken before the snapshot ([`crate::openshift`]).
    pub openshift_root: Option<PathBuf>,
}

/// Save a snapshot from a healthy member into a temporary file (sha256 checked as it
/// arrives), then back it up (the backup takes the cluster's shared lock). The temporary file
/// is needed for the figures computed from it (status, hashkv); memory stays bounded either way.
pub async fn live_backup(cfg: &etcd_cluster::ConnConfig, repo: Arc<Repository>, b: &LiveBackup, progress: Progress) -> Result<BackupReport> {
    let dir = b.tmp_dir.clone().unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::Builder::new().prefix("quorum-backup-").tempdir_in(&dir).map_err(|e| Error::io(&dir, e))?;
    let path = tmp.path().join("snapshot.db");
    // As cluster-backup.sh: the static resources first, then the snapshot.
    let openshift = match &b.openshift_root {
        Some(root) => {
            let base = root.join("etc/kubernetes");
            let resources = root.join(crate::openshift::RESOURCES_DIR);
            let dirs: Vec<String> =
                crate::openshift::latest_static_pod_dirs(&resources)?.into_iter().map(|(_, d)| format!("static-pod-resources/{d}")).collect();
            let stamp = crate::openshift::stamp_now();
            let tarball = tmp.path().join(crate::openshift::tarball_name(&stamp));
            crate::openshift::write_host_tarball(&base, &dirs, &tarball)?;
            Some((tarball, stamp))
        }
        None => None,
    };
    let saved = etcd_cluster::save::save(cfg, &path, &etcd_cluster::save::Source::parse(&b.from), &|_| {}).await?;
    let mut opts = BackupOptions {
        cluster: b.cluster.clone(),
        tags: b.tags.clone(),
        includes: b.includes.clone(),
        uploads: b.uploads.max(1),
        snapshot: path,
        source: saved.endpoint.clone(),
        member: Some(saved.member.clone()),
        openshift,
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
