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
        _ if !lost => "nothing: the cluster has quorum".into(),
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
        let survivor = c.kind == "survivor data dir";
        let from = if survivor { format!("--from-data-dir {}", c.path.display()) } else { format!("--from-snapshot {}", c.path.display()) };
        // Who recovers: the survivor's own member (its WAL names it), else the one member that
        // still answers; the others come back with `member add`.
        let members = etcd_data::cluster::stored_members(&if survivor { db_of(&c.path) } else { c.path.clone() }).unwrap_or_default();
        let me = if survivor {
            etcd_data::wal::identity(&c.path.join("member/wal")).ok().and_then(|i| members.iter().find(|m| m.id == i.node_id))
        } else {
            view.as_ref().filter(|v| v.statuses.len() == 1).and_then(|v| members.iter().find(|m| m.id == v.statuses[0].id_num))
        };
        let (name, peer) = match me {
            Some(m) if !m.name.is_empty() => (m.name.clone(), m.peer_urls.join(",")),
            Some(m) => ("NAME".into(), m.peer_urls.join(",")),
            None => ("NAME".into(), "PEER_URL".into()),
        };
        let new_dir = if survivor { format!("{}-recovered", c.path.display().to_string().trim_end_matches('/')) } else { "NEW_DATA_DIR".into() };
        steps.push(format!("quorum recover {from} --name {name} --initial-advertise-peer-urls {peer} --data-dir {new_dir}"));
        if me.is_none() && !members.is_empty() {
            let all: Vec<String> =
                members.iter().map(|m| format!("{} ({})", if m.name.is_empty() { "unstarted" } else { &m.name }, m.peer_urls.join(","))).collect();
            steps.push(format!("NAME and PEER_URL: those of the member on this host, one of {}", all.join(", ")));
        }
        steps.push(format!("start etcd on {new_dir} with the flags it prints (a one-member cluster)"));
        let others: Vec<_> = members.iter().filter(|m| me.is_none_or(|me| me.id != m.id)).collect();
        if me.is_some() && !others.is_empty() {
            for m in others {
                let n = if m.name.is_empty() { "NAME" } else { &m.name };
                steps.push(format!(
                    "on {n}'s host, with its old data dir wiped: `quorum member add {n} --peer-urls {} --wait`, then start it with the printed flags",
                    m.peer_urls.join(",")
                ));
            }
        } else {
            steps.push("for each other member: wipe its old data dir, `quorum member add NAME --peer-urls URL --wait`, start it with the printed flags".into());
        }
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
    /// The source cluster's other members (from its db), to add back one at a time.
    pub others: Vec<ReAdd>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReAdd {
    pub name: String,
    pub peer_urls: Vec<String>,
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
        proven_by: None,
        bump_revision: p.bump_revision,
        mark_compacted: p.bump_revision.is_some(),
        target_version: None,
    };
    // The source's other members, to re-add (read before the restore consumes `opts`).
    let others: Vec<ReAdd> = etcd_data::cluster::stored_members(&opts.snapshot)
        .unwrap_or_default()
        .into_iter()
        .filter(|m| !m.name.is_empty() && m.name != p.name && !m.peer_urls.contains(&p.peer_url))
        .map(|m| ReAdd { name: m.name, peer_urls: m.peer_urls })
        .collect();
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
    Ok(Prepared { restore: report, start_command, others })
}
