//! `quorum repo upgrade`: an older repository brought to version 3, in place.
//!
//! * Version 1 (one namespace shared by every cluster) to the per-cluster layout (everything
//!   of a cluster under `clusters/<C>/`). Under an exclusive repository-wide lock (`locks/`,
//!   which version-1 binaries also use): packs, one index per cluster, manifests, delta
//!   segments and drill records are copied to their cluster's prefix under the same
//!   content-derived names; then `config` is rewritten with version 3; then the version-1
//!   objects are deleted. Every step before the config rewrite only adds objects a rerun
//!   writes again identically, and the deletions after it are repeated by a rerun, so a kill
//!   at any point and a rerun end in the same repository (FORMAT.md, "`repo upgrade`").
//! * Version 2 (the same layout, whole chunk lists only) to version 3: `config` is rewritten;
//!   later backups store their chunk lists as patches ([`crate::chunk_list`]), which
//!   version-2 binaries would misread, so they refuse the repository from then on.
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::{self, v1, BlobId, IndexPack, Manifest, Verification};
use crate::lock::{self, Scope};
use crate::repository::{store_err, Index, Repository};

#[derive(Debug, Clone, Default, Serialize)]
pub struct UpgradeReport {
    /// The version found.
    pub from_version: u32,
    pub clusters: Vec<String>,
    pub backups: usize,
    pub packs_copied: usize,
    pub bytes_copied: u64,
    pub segments_copied: usize,
    pub verifications_copied: usize,
    /// Version-1 objects deleted once the repository was version 3.
    pub legacy_deleted: usize,
    /// Version-1 segments and drill records left in place: unreadable, or of a cluster name
    /// version 2 cannot store.
    pub legacy_left: usize,
}

pub async fn upgrade(repo: Arc<Repository>) -> Result<UpgradeReport> {
    let lock = lock::acquire(&repo, Scope::Repository, true, "upgrade", repo.lock_retry).await?;
    let r = upgrade_locked(&repo).await;
    lock.release().await;
    r
}

async fn copy(store: &Arc<dyn ObjectStore>, from: &ObjPath, to: &ObjPath) -> Result<()> {
    match store.copy_if_not_exists(from, to).await {
        Ok(()) | Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
        // Names are content-derived: an overwrite writes the same bytes.
        Err(object_store::Error::NotImplemented { .. }) | Err(object_store::Error::NotSupported { .. }) => {
            store.copy(from, to).await.map_err(store_err(format!("copy {from} to {to}")))
        }
        Err(object_store::Error::NotFound { .. }) => Err(Error::Missing(format!("{from}: object is missing"))),
        Err(e) => Err(Error::store(format!("copy {from} to {to}"), e)),
    }
}

async fn upgrade_locked(repo: &Arc<Repository>) -> Result<UpgradeReport> {
    let mut rep = UpgradeReport { from_version: repo.config.version, ..Default::default() };
    let store = repo.store().clone();
    // What is there now. Only objects copied (or named) here are deleted at the end: anything
    // a still-running version-1 agent adds meanwhile (its segment uploads take no lock) stays
    // for the next run, which copies it.
    let legacy_manifests = repo.list(v1::SNAPSHOTS).await?;
    let legacy_index = repo.list(v1::INDEX).await?;
    let legacy_packs = repo.list(v1::DATA).await?;
    let legacy_segments = repo.list(v1::DELTAS).await?;
    let legacy_verifications = repo.list(v1::VERIFICATIONS).await?;
    let mut delete: Vec<ObjPath> = Vec::new();

    // 1. Every version-1 manifest, by cluster, and the version-1 index.
    let mut by_cluster: BTreeMap<String, Vec<(String, Manifest)>> = BTreeMap::new();
    for m in &legacy_manifests {
        let id = m.location.filename().unwrap_or_default().to_string();
        let bytes = repo.get(&m.location).await?;
        if format::content_name(&bytes) != id {
            return Err(Error::Damaged(format!(
                "{}: content does not match its name; remove the damaged manifest (or forget it with the version that wrote it), then upgrade",
                m.location
            )));
        }
        let man: Manifest = repo.open_json(&bytes, b"manifest", m.location.as_ref())?;
        format::check_cluster_name(&man.cluster).map_err(|_| {
            Error::Usage(format!(
                "backup {id} is of cluster {:?}, a name version 2 cannot store (use 1 to 128 of A-Z a-z 0-9 . _ -); forget it before upgrading",
                man.cluster
            ))
        })?;
        by_cluster.entry(man.cluster.clone()).or_default().push((id, man));
    }
    let mut legacy = Index { legacy: true, ..Index::default() };
    for (_, packs) in repo.read_index_objects(v1::INDEX).await? {
        for p in packs? {
            legacy.add(p);
        }
    }
    // 2. Per cluster: packs, index, manifests.
    for (cluster, manifests) in &by_cluster {
        legacy.cluster = cluster.clone();
        let used = crate::prune::referenced(repo, manifests, &legacy).await?;
        let mut needed: Vec<BlobId> = used.iter().filter_map(|b| legacy.blobs.get(b).map(|l| l.pack)).collect::<HashSet<_>>().into_iter().collect();
        needed.sort();
        let mut index_packs = Vec::new();
        for pack in &needed {
            let name = hex::encode(pack);
            copy(&store, &v1::pack_path(&name), &format::pack_path(cluster, &name)).await?;
            let entries = legacy.packs.get(pack).cloned().unwrap_or_default();
            rep.bytes_copied += entries.iter().map(|e| e.length as u64).sum::<u64>();
            index_packs.push(IndexPack { pack: *pack, entries });
            rep.packs_copied += 1;
        }
        etcd_data::restore::crash_point("upgrade-packs");
        if !index_packs.is_empty() {
            repo.write_index(cluster, &index_packs).await?;
        }
        for (id, _) in manifests {
            let from = ObjPath::from(format!("{}/{id}", v1::SNAPSHOTS));
            copy(&store, &from, &format::manifest_path(cluster, id)).await?;
            delete.push(from);
            rep.backups += 1;
        }
        etcd_data::restore::crash_point("upgrade-manifests");
        rep.clusters.push(cluster.clone());
    }
    // Segments of every cluster (also those whose backups were all forgotten).
    for m in &legacy_segments {
        let parts: Vec<&str> = m.location.as_ref().split('/').collect();
        let [_, cluster, file] = parts.as_slice() else { continue };
        if format::check_cluster_name(cluster).is_err() {
            continue;
        }
        copy(&store, &m.location, &ObjPath::from(format!("{}/{file}", crate::delta::dir(cluster)))).await?;
        delete.push(m.location.clone());
        rep.segments_copied += 1;
    }
    // Drill records (their cluster is inside them).
    for m in &legacy_verifications {
        let b = repo.get(&m.location).await?;
        let Ok(v) = repo.open_json::<Verification>(&b, b"verification", m.location.as_ref()) else { continue };
        if format::check_cluster_name(&v.cluster).is_err() {
            continue;
        }
        let file = m.location.filename().unwrap_or_default().to_string();
        copy(&store, &m.location, &ObjPath::from(format!("{}/{file}", format::cluster_path(&v.cluster, "verifications")))).await?;
        delete.push(m.location.clone());
        rep.verifications_copied += 1;
    }
    etcd_data::restore::crash_point("upgrade-before-config");
    // 3. The config, version 3: from now on only the new layout is read, and backups may
    //    store chunk list patches.
    if repo.config.version != format::VERSION {
        let mut cfg = repo.config.clone();
        cfg.version = format::VERSION;
        let body = serde_json::to_vec_pretty(&cfg).expect("serializable");
        store.put(&ObjPath::from("config"), PutPayload::from(body)).await.map_err(|e| match e {
            e @ (object_store::Error::PermissionDenied { .. } | object_store::Error::Precondition { .. }) => Error::Refused(format!(
                "rewrite config: {e} (a write-once bucket cannot be upgraded in place; whatever was copied was added beside the old objects and nothing was lost)"
            )),
            e => Error::store("write config", e),
        })?;
    }
    etcd_data::restore::crash_point("upgrade-config");
    // 4. The version-1 objects copied above, the index objects and packs listed at the start
    //    (every backup they served now has its own copies).
    delete.extend(legacy_index.iter().map(|m| m.location.clone()));
    delete.extend(legacy_packs.iter().map(|m| m.location.clone()));
    for p in &delete {
        match repo.delete(p).await {
            Ok(()) => rep.legacy_deleted += 1,
            Err(Error::Refused(why)) => return Err(Error::Refused(format!("{why} (the repository is version 3 and works; the version-1 objects can be deleted once the bucket allows it, by running `quorum repo upgrade` again)"))),
            Err(e) => return Err(e),
        }
        if rep.legacy_deleted == 1 {
            etcd_data::restore::crash_point("upgrade-deleting");
        }
    }
    rep.legacy_left = legacy_segments.len() + legacy_verifications.len() - rep.segments_copied - rep.verifications_copied;
    Ok(rep)
}
