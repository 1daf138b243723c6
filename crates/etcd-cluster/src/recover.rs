//! Recovery from quorum loss.
//!
//! `plan` looks at what answers and at the candidate sources (a survivor's data dir, snapshot
//! files) and says which path applies and what it costs. `prepare` builds a single-member
//! cluster's data dir on the recovery host with the native restore, from the survivor's db
//! (keeping every applied change) or from a snapshot (losing what came after it); the
//! other members are then re-added one at a time with `member add --wait`. Quorum does not
//! start etcd: it prints the command for each step.

use std::path::{Path, PathBuf};

use etcd_data::cluster::ClusterSpec;
use etcd_data::restore::{restore, RestoreOptions, RestoreReport, Target};
use serde::Serialize;

use crate::conn::ConnConfig;
use crate::error::{Error, Result};
use crate::view::observe;

#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    pub kind: String,
    pub path: PathBuf,
    pub usable: bool,
    pub revision: Option<i64>,
    pub note: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub members_known: usize,
    pub members_answering: usize,
    pub quorum_lost: bool,
    pub candidates: Vec<Candidate>,
    pub chosen: Option<Candidate>,
    pub steps: Vec<String>,
    pub loss: String,
}

fn db_of(data_dir: &Path) -> PathBuf {
    data_dir.join("member/snap/db")
}

fn examine(kind: &str, path: &Path, db: &Path) -> Candidate {
    match etcd_data::status(db) {
        Ok(st) => Candidate { kind: kind.into(), path: path.to_path_buf(), usable: true, revision: Some(st.revision), note: "intact".into() },
        Err(e) => Candidate { kind: kind.into(), path: path.to_path_buf(), usable: false, revision: None, note: e.to_string() },
    }
}

/// Decide how to recover.
pub async fn plan(cfg: &ConnConfig, data_dirs: &[PathBuf], snapshots: &[PathBuf]) -> Plan {
    let view = observe(cfg, 0).await.ok();
    let (known, answering, lost) = match &view {
        Some(v) => (v.voters(), v.statuses.len(), v.statuses.len() < v.quorum_size() || v.leader.is_none()),
        None => (cfg.endpoints.len(), 0, true),
    };
    let mut candidates: Vec<Candidate> = data_dirs.iter().map(|d| examine("survivor data dir", d, &db_of(d))).collect();
    candidates.extend(snapshots.iter().map(|s| examine("snapshot", s, s)));
    // Prefer a survivor (it has every change it applied), then the newest snapshot.
    let chosen = candidates.iter().filter(|c| c.usable).max_by_key(|c| (c.kind == "survivor data dir", c.revision.unwrap_or(0))).cloned();
    let newest = candidates.iter().filter_map(|c| c.revision).max();
    let loss = match &chosen {
        None => "no usable source: give --data-dir of a survivor or --snapshot".into(),
        Some(c) if c.kind == "snapshot" => format!(
            "changes after revision {} (the snapshot's) are lost{}",
            c.revision.unwrap_or(0),
            newest.filter(|n| Some(*n) > c.revision).map(|n| format!("; another source reaches {n}")).unwrap_or_default()
        ),
        Some(_) => "nothing the survivor applied is lost (writes it had not applied are)".into(),
    };
    let mut steps = Vec::new();
    if !lost {
        steps.push(format!("the cluster has quorum ({answering} of {known} answer): no recovery needed; replace dead members with `quorum member replace`"));
    } else if let Some(c) = &chosen {
        steps.push("stop every remaining etcd member (systemctl stop etcd / move the static pod manifest away)".into());
        let from = if c.kind == "snapshot" { format!("--from-snapshot {}", c.path.display()) } else { format!("--from-data-dir {}", c.path.display()) };
        steps.push(format!("quorum recover {from} --name NAME --initial-advertise-peer-urls PEER_URL --data-dir NEW_DATA_DIR"));
        steps.push("start etcd on NEW_DATA_DIR with the flags it prints (a one-member cluster)".into());
        steps.push("for each other member: wipe its old data dir, `quorum member add NAME --peer-urls URL --wait`, start it with the printed flags".into());
    } else {
        steps.push(
            "find a survivor: on each control-plane host whose etcd is stopped, its data dir (often /var/lib/etcd, with member/snap/db) goes to `quorum recover plan --data-dir DIR`"
                .into(),
        );
        steps.push(
            "or a backup: `quorum backups get --repo URL latest -o latest.db`, then `quorum recover plan --snapshot latest.db` (changes after it are lost)"
                .into(),
        );
    }
    Plan { members_known: known, members_answering: answering, quorum_lost: lost, candidates, chosen, steps, loss }
}

#[derive(Debug, Clone)]
pub struct Prepare {
    pub from_data_dir: Option<PathBuf>,
    pub from_snapshot: Option<PathBuf>,
    pub name: String,
    pub peer_url: String,
    pub client_url: Option<String>,
    pub data_dir: PathBuf,
    pub token: String,
    pub bump_revision: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Prepared {
    pub restore: RestoreReport,
    pub start_command: String,
}

/// Build the one-member cluster's data dir.
pub fn prepare(p: &Prepare) -> Result<Prepared> {
    let (db, skip_hash) = match (&p.from_data_dir, &p.from_snapshot) {
        (Some(d), None) => {
            let db = db_of(d);
            // A running etcd holds bbolt's exclusive lock on its db; reading it then could see
            // a half-committed state.
            let f = std::fs::File::open(&db).map_err(|source| Error::Io { path: db.clone(), source })?;
            if f.try_lock_shared().is_err() {
                return Err(Error::Refused(format!("{} is locked: the etcd that owns it is still running; stop it first", db.display())));
            }
            (db, true)
        }
        (None, Some(s)) => (s.clone(), false),
        _ => return Err(Error::Usage("a recovery starts from exactly one source: a survivor's data dir or a snapshot".into())),
    };
    let initial = format!("{}={}", p.name, p.peer_url);
    let cluster = ClusterSpec::new(&initial, &p.token).map_err(etcd_data::restore::RestoreError::from)?;
    let opts = RestoreOptions {
        snapshot: db,
        cluster,
        targets: vec![Target { name: p.name.clone(), data_dir: p.data_dir.clone(), wal_dir: None }],
        skip_hash_check: skip_hash,
        bump_revision: p.bump_revision,
        mark_compacted: p.bump_revision.is_some(),
        target_version: None,
    };
    let report = restore(&opts, &|_, _| {})?;
    let client = p.client_url.clone().unwrap_or_else(|| "http://127.0.0.1:2379".into());
    let start_command = format!(
        "etcd --name {} --data-dir {} --listen-peer-urls {} --initial-advertise-peer-urls {} --listen-client-urls {} --advertise-client-urls {} --initial-cluster {} --initial-cluster-token {}",
        p.name,
        p.data_dir.display(),
        p.peer_url,
        p.peer_url,
        client,
        client,
        initial,
        p.token
    );
    Ok(Prepared { restore: report, start_command })
}
