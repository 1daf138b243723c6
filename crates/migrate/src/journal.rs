//! Migration records in the repository: what a resume needs to continue the same migration.
//!
//! `migrations/<id>/<generation>` holds a sealed JSON [`Record`] (the repository's data key,
//! authenticated data `migration`), written once after the source backup exists and before
//! anything is written to a target: the backup it works from, the selection, the target.
//! `<generation>.restored` (whole clusters: the data dirs are written) and `<generation>.done`
//! (verification passed) mark the steps that must not be repeated or are finished. Objects are
//! written once and never rewritten, as everywhere in the repository (write-once buckets work).
//!
//! The id is derived from what identifies a migration (kind, source cluster name, selection,
//! target), so the same command finds its record; `--restart` starts a new generation with a
//! new snapshot.

use bytes::Bytes;
use object_store::path::Path as ObjPath;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use repo::Repository;

use crate::Result;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub generation: String,
    /// `whole` or `partial`.
    pub kind: String,
    /// The source cluster's name in the repository.
    pub cluster: String,
    /// The backup every attempt of this generation works from.
    pub backup: String,
    pub revision: i64,
    pub selection: String,
    pub target: String,
    pub time: String,
    pub host: String,
}

/// The state of the newest generation of a migration.
#[derive(Debug, Clone)]
pub struct State {
    pub record: Record,
    pub restored: Option<String>,
    pub done: Option<String>,
    /// A whole-cluster migration cut over (synced to the stopped source and verified).
    pub cutover: Option<String>,
    /// The newest sync's note (whole clusters).
    pub last_sync: Option<SyncNote>,
}

/// Written at the end of every `--sync`, `--follow` and `--cutover` run (`<generation>.sync-<Unix
/// ms>`): what it did, and the totals of every run of the generation so far.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SyncNote {
    pub time: String,
    pub mode: String,
    /// `synced`, `verified`, `verification failed`, or the error that stopped the run.
    pub outcome: String,
    pub target_revision: i64,
    pub source_revision: i64,
    pub revisions_applied_total: u64,
    pub puts_total: u64,
    pub deletes_total: u64,
    /// Keys found changed in the target since the migration wrote them (namespaces/prefixes).
    #[serde(default)]
    pub conflicts_total: u64,
    /// The newest `--follow` checkpoint of the generation (whole clusters): the target verified
    /// at a revision, which a cutover verifies from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<crate::sync::CutoverCheck>,
}

/// A stable id from the parts that identify a migration.
pub fn migration_id(kind: &str, cluster: &str, selection: &str, target: &str) -> String {
    let mut h = Sha256::new();
    for p in [kind, cluster, selection, target] {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    hex::encode(&h.finalize()[..8])
}

fn dir(id: &str) -> String {
    format!("migrations/{id}")
}

/// Every migration in the repository, its newest generation each, by id.
pub async fn list(repo: &Repository) -> Result<Vec<State>> {
    let metas = repo.list("migrations").await?;
    let id_of = |m: &object_store::ObjectMeta| {
        let parts: Vec<String> = m.location.parts().map(|p| p.as_ref().to_string()).collect();
        let at = parts.iter().rposition(|p| p == "migrations")?;
        parts.get(at + 1).filter(|_| parts.len() > at + 2).cloned()
    };
    let mut ids: Vec<String> = metas.iter().filter_map(id_of).collect();
    ids.sort();
    ids.dedup();
    let mut out = Vec::new();
    for id in ids {
        if let Some(st) = load(repo, &id).await? {
            out.push(st);
        }
    }
    Ok(out)
}

/// The newest generation of migration `id`, if any.
pub async fn load(repo: &Repository, id: &str) -> Result<Option<State>> {
    let metas = repo.list(&dir(id)).await?;
    let mut names: Vec<String> = metas.iter().filter_map(|m| m.location.filename().map(str::to_string)).collect();
    names.sort();
    let Some(gen) = names.iter().filter(|n| !n.contains('.')).max().cloned() else { return Ok(None) };
    let body = repo.get(&ObjPath::from(format!("{}/{gen}", dir(id)))).await?;
    let record: Record = repo.open_json(&body, b"migration", &format!("migration record {id}/{gen}"))?;
    let restored = marker(repo, id, &gen, "restored", &names).await?;
    let done = marker(repo, id, &gen, "done", &names).await?;
    let cutover = marker(repo, id, &gen, "cutover", &names).await?;
    let prefix = format!("{gen}.sync-");
    let last_sync = match names.iter().filter(|n| n.starts_with(&prefix)).max() {
        Some(n) => {
            let b = repo.get(&ObjPath::from(format!("{}/{n}", dir(id)))).await?;
            Some(repo.open_json(&b, b"migration-sync", "migration sync note")?)
        }
        None => None,
    };
    let state = State { record, restored, done, cutover, last_sync };
    Ok(Some(state))
}

async fn marker(repo: &Repository, id: &str, gen: &str, step: &str, names: &[String]) -> Result<Option<String>> {
    let name = format!("{gen}.{step}");
    if !names.contains(&name) {
        return Ok(None);
    }
    let b = repo.get(&ObjPath::from(format!("{}/{name}", dir(id)))).await?;
    Ok(Some(repo.open_json(&b, b"migration-marker", "migration marker")?))
}

/// A new generation's record (written before anything reaches a target).
pub async fn create(repo: &Repository, mut record: Record) -> Result<Record> {
    record.generation = format!("{}-{}", chrono::Utc::now().format("%Y%m%dT%H%M%SZ"), &repo::format::random_name()[..8]);
    let body = repo.seal_json(&record, b"migration");
    repo.put_new(&ObjPath::from(format!("{}/{}", dir(&record.id), record.generation)), Bytes::from(body)).await?;
    Ok(record)
}

/// What one sync run did, for its note.
#[derive(Debug, Clone, Default)]
pub struct SyncRun {
    /// `synced`, `verified` or `verification failed`.
    pub outcome: &'static str,
    pub source_revision: i64,
    /// The target's revision (whole clusters; a namespace sync keeps the previous note's).
    pub target_revision: Option<i64>,
    pub changes: u64,
    pub puts: u64,
    pub deletes: u64,
    pub conflicts: u64,
}

impl SyncNote {
    /// The note of a `mode` run that ended as `run` (or with that error), after `self`, the
    /// newest note before it (the default when there was none).
    pub fn after(&self, mode: &str, run: std::result::Result<&SyncRun, String>) -> SyncNote {
        let mut note = SyncNote { time: repo::now_rfc3339(), mode: mode.into(), ..self.clone() };
        match run {
            Ok(r) => {
                note.outcome = r.outcome.into();
                note.source_revision = r.source_revision;
                note.target_revision = r.target_revision.unwrap_or(self.target_revision);
                note.revisions_applied_total += r.changes;
                note.puts_total += r.puts;
                note.deletes_total += r.deletes;
                note.conflicts_total += r.conflicts;
            }
            Err(e) => note.outcome = format!("stopped: {e}"),
        }
        note
    }
}

/// Write a sync's note (see [`SyncNote`]). It is for `--status`: a repository that cannot take
/// it does not undo the sync, so a failure is a warning. Then the generation's older notes past
/// the newest [`SYNC_NOTES_KEPT`] are removed.
pub async fn note_sync(repo: &Repository, record: &Record, note: &SyncNote, on: &crate::Sink) {
    let body = repo.seal_json(note, b"migration-sync");
    let name = format!("{}/{}.sync-{:020}", dir(&record.id), record.generation, chrono::Utc::now().timestamp_millis());
    if let Err(e) = repo.put_new(&ObjPath::from(name), Bytes::from(body)).await {
        on(crate::Event::Warning(format!("could not record this sync in the repository: {e}")));
        return;
    }
    prune_sync_notes(repo, record).await;
}

/// Sync notes kept per generation. Each carries the totals and the newest checkpoint forward,
/// so only the newest is ever read; the others are history for whoever looks. A follow writes
/// one at every checkpoint (up to 60 an hour), so without a bound a follow of a month left
/// 40,000 objects that every `--status` and every later note's write would list.
pub const SYNC_NOTES_KEPT: usize = 16;

/// Best effort: a repository that refuses deletes (an append-only credential, an object lock)
/// keeps its notes, and the sync goes on.
async fn prune_sync_notes(repo: &Repository, record: &Record) {
    let Ok(metas) = repo.list(&dir(&record.id)).await else { return };
    let prefix = format!("{}.sync-", record.generation);
    let mut notes: Vec<String> = metas.iter().filter_map(|m| m.location.filename()).filter(|n| n.starts_with(&prefix)).map(str::to_string).collect();
    notes.sort();
    let excess = notes.len().saturating_sub(SYNC_NOTES_KEPT);
    for n in &notes[..excess] {
        let _ = repo.delete(&ObjPath::from(format!("{}/{n}", dir(&record.id)))).await;
    }
}

/// Mark a step of a generation (`restored`, `done`) with the time it finished.
pub async fn mark(repo: &Repository, record: &Record, step: &str) -> Result<String> {
    let t = repo::now_rfc3339();
    let body = repo.seal_json(&t, b"migration-marker");
    repo.put_new(&ObjPath::from(format!("{}/{}.{step}", dir(&record.id), record.generation)), Bytes::from(body)).await?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_generation_keeps_its_newest_sync_notes_only() {
        let d = tempfile::tempdir().unwrap();
        let url = format!("file://{}", d.path().join("repo").display());
        let secret = repo::crypto::Secret::passphrase(b"pw-for-tests".to_vec()).unwrap();
        let loc = repo::Location::open(&url, &repo::StoreOptions::default(), true).unwrap();
        let opts = repo::repository::InitOptions { argon2: repo::crypto::Argon2Params { m_kib: 1024, t: 1, p: 1 }, ..Default::default() };
        let repo = repo::repository::init(loc, &secret, None, &opts).await.unwrap();
        let record = Record { id: migration_id("whole", "prod", "", "t"), kind: "whole".into(), cluster: "prod".into(), ..Default::default() };
        let record = create(&repo, record).await.unwrap();
        let warnings = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let on: crate::Sink = {
            let w = warnings.clone();
            std::sync::Arc::new(move |e| w.lock().unwrap().push(format!("{e:?}")))
        };
        let mut note = SyncNote::default();
        for _ in 0..SYNC_NOTES_KEPT + 9 {
            note.puts_total += 1;
            note_sync(&repo, &record, &note, &on).await;
            // Notes are named by the millisecond.
            tokio::time::sleep(std::time::Duration::from_millis(3)).await;
        }
        assert!(warnings.lock().unwrap().is_empty(), "{:?}", warnings.lock().unwrap());
        let names: Vec<String> = repo.list(&dir(&record.id)).await.unwrap().iter().filter_map(|m| m.location.filename().map(str::to_string)).collect();
        assert_eq!(names.iter().filter(|n| n.contains(".sync-")).count(), SYNC_NOTES_KEPT, "{names:?}");
        assert!(names.contains(&record.generation), "the record stays: {names:?}");
        let st = load(&repo, &record.id).await.unwrap().unwrap();
        assert_eq!(st.last_sync.unwrap().puts_total, (SYNC_NOTES_KEPT + 9) as u64, "the newest note is read");
    }
}
