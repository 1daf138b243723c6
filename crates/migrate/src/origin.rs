//! Where a migration's source data comes from: the backup named by its record (a resume), a
//! backup named with `--from-backup`, or a new live backup of the source cluster; and, for a
//! dry run that has neither, a temporary snapshot that never reaches the repository.

use std::path::PathBuf;
use std::sync::Arc;

use etcd_cluster::ConnConfig;
use repo::format::Manifest;
use repo::Repository;

use crate::journal::{self, Record, State};
use crate::{Error, Event, Result, Sink};

/// What identifies the migration and how to get its source.
pub struct Begin<'a> {
    pub kind: &'static str,
    pub cluster: &'a str,
    pub selection: String,
    pub target: String,
    pub restart: bool,
    pub from_backup: Option<&'a str>,
    /// Nothing may be written (no backup, no record).
    pub dry_run: bool,
    /// The snapshot is needed as a file (a whole-cluster dry run only looks at data dirs).
    pub fetch: bool,
    pub tmp_dir: Option<PathBuf>,
    pub uploads: usize,
}

/// The source snapshot as a file, and what it came from.
pub struct Origin {
    pub id: String,
    /// The record of this generation (None in a dry run that found none).
    pub state: Option<State>,
    pub resumed: bool,
    /// The backup (None for a dry run's temporary snapshot).
    pub backup: Option<(String, Manifest)>,
    pub revision: i64,
    /// The snapshot file (reassembled from the repository, or saved for a dry run); absent
    /// when [`Begin::fetch`] was false.
    pub snapshot: PathBuf,
    pub _tmp: repo::scratch::Scratch,
}

fn describe_members(view: &etcd_cluster::ClusterView) -> String {
    let names: Vec<String> = view.statuses.iter().map(|s| if s.name.is_empty() { s.endpoint.clone() } else { s.name.clone() }).collect();
    format!("{} member(s) ({})", view.members.len().max(names.len()), names.join(", "))
}

/// Describe the source cluster for the plan (members, revision), when it is reachable.
pub async fn source_line(src: &ConnConfig) -> String {
    observe_source(src).await.0
}

/// The plan's source line and the source's current revision (0 when not reachable).
async fn observe_source(src: &ConnConfig) -> (String, i64) {
    match etcd_cluster::observe(src, etcd_cluster::DEFAULT_QUOTA).await {
        Ok(v) => {
            let rev = v.statuses.iter().map(|s| s.revision).max().unwrap_or(0);
            (format!("source:    {} at {}, revision {rev}", describe_members(&v), src.endpoints.join(",")), rev)
        }
        Err(e) => (format!("source:    {} (not reachable: {e})", src.endpoints.join(",")), 0),
    }
}

/// Find or make the source backup, write the record, and reassemble the snapshot locally.
pub async fn begin(src: Option<&ConnConfig>, repo: Arc<Repository>, b: &Begin<'_>, parallel: usize, on: &Sink) -> Result<Origin> {
    let id = journal::migration_id(b.kind, b.cluster, &b.selection, &b.target);
    let dir = b.tmp_dir.clone().unwrap_or_else(std::env::temp_dir);
    // Locked while in use; one left by a killed migration is swept by the next.
    let tmp = repo::scratch::Scratch::new(&dir, "quorum-migrate-")?;
    let snapshot = tmp.path().join("source.db");
    let existing = if b.restart { None } else { journal::load(&repo, &id).await? };

    let (state, resumed, backup) = if let Some(st) = existing {
        let r = &st.record;
        if r.kind != b.kind || r.cluster != b.cluster || r.selection != b.selection || r.target != b.target {
            return Err(Error::NeedsRestart(format!(
                "migration record {id}/{} does not describe this migration (it was made for {} {} of cluster {} into {})",
                r.generation, r.kind, r.selection, r.cluster, r.target
            )));
        }
        on(Event::Plan(format!(
            "resuming: migration {id} (generation {}, started {}) works from backup {} at revision {}; keys the target already holds with the same content are not written again",
            st.record.generation,
            st.record.time,
            repo::short(&st.record.backup),
            st.record.revision
        )));
        if let Some(t) = &st.done {
            on(Event::Plan(format!(
                "this migration completed at {t}; verifying it again, nothing is written (--restart starts a new one from a new snapshot)"
            )));
        }
        if let Some(f) = b.from_backup {
            if !st.record.backup.starts_with(f) && f != "latest" {
                on(Event::Warning(format!(
                    "--from-backup {f} ignored: this migration works from backup {}; --restart to start over",
                    repo::short(&st.record.backup)
                )));
            }
        }
        let m = repo.read_manifest(b.cluster, &st.record.backup).await.map_err(|e| match e {
            repo::Error::Missing(_) => {
                Error::NeedsRestart(format!("backup {} of migration {id} is no longer in the repository (forgotten?)", repo::short(&st.record.backup)))
            }
            e => e.into(),
        })?;
        let bk = (st.record.backup.clone(), m);
        (Some(st), true, Some(bk))
    } else if let Some(f) = b.from_backup {
        let (bid, m) = repo.resolve(f, Some(b.cluster)).await?;
        on(Event::Plan(format!(
            "source:    backup {} of cluster {} (revision {}, {} keys, {})",
            repo::short(&bid),
            m.cluster,
            m.snapshot.revision,
            m.snapshot.live_keys.unwrap_or(0),
            m.time
        )));
        (None, false, Some((bid, m)))
    } else {
        let src = src.ok_or_else(|| Error::Usage("no source: neither the source cluster nor an existing backup was given".into()))?;
        let (line, revision) = observe_source(src).await;
        on(Event::Plan(line));
        if b.dry_run && !b.fetch {
            return Ok(Origin { id, state: None, resumed: false, backup: None, revision, snapshot, _tmp: tmp });
        }
        if b.dry_run {
            on(Event::Step("dry run: saving a temporary snapshot of the source (nothing goes to the repository)".into()));
            let from = etcd_cluster::save::Source::parse(&pick_member(src).await);
            let saved = etcd_cluster::save::save(src, &snapshot, &from, &|n| on(Event::Progress { done: n, total: 0 })).await?;
            return Ok(Origin { id, state: None, resumed: false, backup: None, revision: saved.revision, snapshot, _tmp: tmp });
        }
        on(Event::Step(format!("backing up the source into the repository as cluster {}", b.cluster)));
        let live = repo::live::LiveBackup {
            cluster: b.cluster.to_string(),
            from: pick_member(src).await,
            tmp_dir: b.tmp_dir.clone(),
            tags: vec![format!("migration:{id}")],
            uploads: b.uploads.max(1),
            ..Default::default()
        };
        let report = repo::live::live_backup(src, repo.clone(), &live, progress(on)).await?;
        on(Event::Plan(format!(
            "backup:    {} of cluster {} at revision {} ({} keys) from member {}",
            repo::short(&report.id),
            b.cluster,
            report.manifest.snapshot.revision,
            report.manifest.snapshot.live_keys.unwrap_or(0),
            report.manifest.member.clone().unwrap_or_default()
        )));
        (None, false, Some((report.id.clone(), report.manifest.clone())))
    };
    let (bid, m) = backup.expect("a backup in every branch that gets here");
    let state = match state {
        Some(s) => Some(s),
        None if b.dry_run => None,
        None => {
            let rec = Record {
                id: id.clone(),
                generation: String::new(),
                kind: b.kind.into(),
                cluster: b.cluster.into(),
                backup: bid.clone(),
                revision: m.snapshot.revision,
                selection: b.selection.clone(),
                target: b.target.clone(),
                time: repo::now_rfc3339(),
                host: repo::hostname(),
            };
            let record = journal::create(&repo, rec).await?;
            on(Event::Plan(format!("migration: {id}, generation {} (run the same command again to resume)", record.generation)));
            Some(State { record, restored: None, done: None, cutover: None, last_sync: None })
        }
    };
    if !b.fetch {
        return Ok(Origin { id, state, resumed, revision: m.snapshot.revision, backup: Some((bid, m)), snapshot, _tmp: tmp });
    }
    on(Event::Step(format!("fetching backup {} from the repository", repo::short(&bid))));
    repo::restore::reassemble(repo.clone(), &bid, &m, &snapshot, parallel, progress(on)).await?;
    Ok(Origin { id, state, resumed, revision: m.snapshot.revision, backup: Some((bid, m)), snapshot, _tmp: tmp })
}

/// Progress of a repository transfer as [`Event::Progress`].
pub(crate) fn progress(on: &Sink) -> repo::backup::Progress {
    let on = on.clone();
    Arc::new(move |done, total| on(Event::Progress { done, total }))
}

/// A follower when the source has one (spares the leader), else the first healthy endpoint.
async fn pick_member(src: &ConnConfig) -> String {
    match etcd_cluster::observe(src, etcd_cluster::DEFAULT_QUOTA).await {
        Ok(v) if v.statuses.iter().any(|s| s.errors.is_empty() && !s.is_leader && !s.is_learner) => "follower".into(),
        _ => "endpoints".into(),
    }
}
