//! How fresh a cluster's protection is, as the repository records it: its newest full backup
//! and its newest passed restore drill, whoever made them.
//!
//! Manifests and drill records are written once and never rewritten, so a [`Freshness`] reads
//! each only once: a refresh lists the cluster's `snapshots/` and `verifications/` prefixes and
//! reads only the objects it has not read before (the agent refreshes every minute; its cost
//! after the first is two listings).
//!
//! ```no_run
//! # async fn f(repo: &repo::Repository) -> repo::Result<()> {
//! let mut fresh = repo::freshness::Freshness::new("prod");
//! let now = fresh.refresh(repo).await?;
//! if let Some(b) = &now.newest_backup {
//!     println!("newest backup {} at revision {}, {}", b.id, b.revision, b.time);
//! }
//! # Ok(()) }
//! ```
use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use object_store::path::Path as ObjPath;

use crate::format::{self, Verification};
use crate::{Error, Repository, Result};

/// A cluster's newest full backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewestBackup {
    pub id: String,
    pub time: DateTime<Utc>,
    pub revision: i64,
}

/// What one refresh found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub newest_backup: Option<NewestBackup>,
    /// The time of the newest drill of this cluster that passed.
    pub newest_passed_drill: Option<DateTime<Utc>>,
    /// Objects that did not read (damaged, under another key, or a record of another cluster):
    /// skipped, and not read again.
    pub unreadable: usize,
}

/// The manifests and drill records of one cluster read so far (None: unreadable).
#[derive(Debug, Default)]
pub struct Freshness {
    cluster: String,
    backups: HashMap<String, Option<(DateTime<Utc>, i64)>>,
    drills: HashMap<String, Option<(DateTime<Utc>, bool)>>,
}

fn parse_time(t: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(t).ok().map(|t| t.with_timezone(&Utc))
}

impl Freshness {
    pub fn new(cluster: &str) -> Freshness {
        Freshness { cluster: cluster.to_string(), ..Default::default() }
    }

    /// List both prefixes, read what is new, forget what is gone, and summarise.
    pub async fn refresh(&mut self, repo: &Repository) -> Result<Summary> {
        let cluster = self.cluster.clone();
        let ids: HashSet<String> = repo.backup_ids(&cluster).await?.into_iter().collect();
        self.backups.retain(|id, _| ids.contains(id));
        let new: Vec<String> = ids.into_iter().filter(|id| !self.backups.contains_key(id)).collect();
        let read: Vec<(String, Result<format::Manifest>)> = futures::stream::iter(new)
            .map(|id| {
                let cluster = &cluster;
                async move {
                    let m = repo.read_manifest(cluster, &id).await;
                    (id, m)
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        for (id, m) in read {
            match m {
                Ok(m) => {
                    let at = parse_time(&m.time);
                    self.backups.insert(id, at.map(|t| (t, m.snapshot.revision)));
                }
                Err(Error::Missing(_)) => {} // forgotten meanwhile
                Err(Error::Damaged(_)) => {
                    self.backups.insert(id, None);
                }
                Err(e) => return Err(e),
            }
        }

        let metas = repo.list(&format::cluster_path(&cluster, "verifications")).await?;
        let names: HashSet<String> = metas.iter().map(|m| m.location.to_string()).collect();
        self.drills.retain(|n, _| names.contains(n));
        let new: Vec<String> = names.into_iter().filter(|n| !self.drills.contains_key(n)).collect();
        let read: Vec<(String, Result<Verification>)> = futures::stream::iter(new)
            .map(|name| async move {
                let v = match repo.get(&ObjPath::from(name.as_str())).await {
                    Ok(b) => repo.open_json::<Verification>(&b, b"verification", &name),
                    Err(e) => Err(e),
                };
                (name, v)
            })
            .buffer_unordered(16)
            .collect()
            .await;
        for (name, v) in read {
            match v {
                Ok(v) => {
                    let at = parse_time(&v.time).filter(|_| v.cluster == cluster);
                    self.drills.insert(name, at.map(|t| (t, v.ok)));
                }
                Err(Error::Missing(_)) => {}
                Err(Error::Damaged(_)) => {
                    self.drills.insert(name, None);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(self.summary())
    }

    /// The summary of what was read so far.
    pub fn summary(&self) -> Summary {
        let newest_backup = self
            .backups
            .iter()
            .filter_map(|(id, b)| b.map(|(time, revision)| NewestBackup { id: id.clone(), time, revision }))
            .max_by(|a, b| a.time.cmp(&b.time).then(a.revision.cmp(&b.revision)).then_with(|| b.id.cmp(&a.id)));
        let newest_passed_drill = self.drills.values().filter_map(|d| d.filter(|(_, ok)| *ok).map(|(t, _)| t)).max();
        let unreadable = self.backups.values().filter(|b| b.is_none()).count() + self.drills.values().filter(|d| d.is_none()).count();
        Summary { newest_backup, newest_passed_drill, unreadable }
    }
}
