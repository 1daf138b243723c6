//! Recovery from quorum loss.
//!
//! `plan` looks at what answers and at the candidate sources (a survivor's data dir, snapshot
//! files) and says which path applies and what it costs. `prepare` builds data dirs with the
//! native restore, from the survivor's db (keeping every applied change) or from a snapshot
//! (losing what came after it), two ways:
//! * every member at once (`initial_cluster`): the same data for each member of a new cluster,
//!   started together. One election replaces a `member add` per member, each of which etcd
//!   refuses until the cluster has been fully connected for 5 s, then a snapshot transfer to
//!   the new member; the plan prints this path first when the source's db names every voter;
//! * one member, the others re-added one at a time with `member add --wait`.
//!
//! Quorum does not start etcd: it prints the command for each member.

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
    /// The slower path when the fast one does not suit (one member, the others re-added one
    /// at a time with `member add`, which transfers the data over etcd's peer connection).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub alternative: Vec<String>,
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

/// Why the plan's `recover` commands carry `--bump-revision`.
const BUMP_NOTE: &str = "--bump-revision (and the compaction it implies) keeps Kubernetes API servers and informers from reading revisions reused by the new cluster; leave it out only for a store no Kubernetes uses";

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
    let mut fast: Vec<String> = Vec::new();
    if !lost {
        steps.push(format!("the cluster has quorum ({answering} of {known} answer): no recovery needed; replace dead members with `quorum member replace`"));
    } else if let Some(c) = &chosen {
        steps.push("stop every remaining etcd member (systemctl stop etcd / move the static pod manifest away)".into());
        let survivor = c.kind == "survivor data dir";
        let from = if survivor { format!("--from-data-dir {}", c.path.display()) } else { format!("--from-snapshot {}", c.path.display()) };
        let source_db = if survivor { db_of(&c.path) } else { c.path.clone() };
        // The revision bump every restore of a Kubernetes store wants: the lost members may
        // have applied (and API servers seen) revisions past this source's.
        let bump = etcd_data::restore::suggested_bump(&source_db).map(|b| format!(" --bump-revision {b}")).unwrap_or_default();
        // Who recovers: the survivor's own member (its WAL names it), else the one member that
        // still answers; the others come back with `member add`.
        let members = etcd_data::cluster::stored_members(&source_db).unwrap_or_default();
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
        // The fast path: every member restored from the same data and started at once, one
        // election instead of a `member add` (and etcd's 5 s of full connectivity) per member.
        // It needs every voting member's name and peer URLs, which the source's db keeps.
        let mut voters: Vec<_> = members.iter().filter(|m| !m.is_learner).collect();
        voters.sort_by(|a, b| a.name.cmp(&b.name));
        if me.is_some() && voters.len() > 1 && voters.iter().all(|m| !m.name.is_empty() && !m.peer_urls.is_empty()) {
            let initial: Vec<String> = voters.iter().flat_map(|m| m.peer_urls.iter().map(move |u| format!("{}={u}", m.name))).collect();
            let template = format!("{new_dir}-{{name}}");
            fast.push(format!("quorum recover {from} --initial-cluster {} --all-members --name {name} --data-dir {template}{bump}", initial.join(",")));
            let others: Vec<String> =
                voters.iter().filter(|m| m.name != name).map(|m| format!("{} to {}'s host", template.replace("{name}", &m.name), m.name)).collect();
            fast.push(format!("copy each other member's data dir to its host, as its etcd data dir, the old one wiped (rsync -a): {}", others.join(", ")));
            fast.push(
                "start every member at once with the flags `quorum recover` printed (--initial-cluster-state new): they elect a leader, no member add".into(),
            );
            if !bump.is_empty() {
                fast.push(BUMP_NOTE.into());
            }
        }
        steps.push(format!("quorum recover {from} --name {name} --initial-advertise-peer-urls {peer} --data-dir {new_dir}{bump}"));
        if me.is_none() && !members.is_empty() {
            let all: Vec<String> =
                members.iter().map(|m| format!("{} ({})", if m.name.is_empty() { "unstarted" } else { &m.name }, m.peer_urls.join(","))).collect();
            steps.push(format!("NAME and PEER_URL: those of the member on this host, one of {}", all.join(", ")));
        }
        steps.push(format!("start etcd on {new_dir} with the flags it prints (a one-member cluster)"));
        let mut others: Vec<_> = members.iter().filter(|m| me.is_none_or(|me| me.id != m.id)).collect();
        others.sort_by(|a, b| a.name.cmp(&b.name));
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
        if !bump.is_empty() {
            steps.push(BUMP_NOTE.into());
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
    // With a fast path, it is the plan and the one-at-a-time steps are the alternative.
    let alternative = if fast.is_empty() {
        Vec::new()
    } else {
        let stop = steps.remove(0);
        std::mem::replace(&mut steps, std::iter::once(stop).chain(fast).collect())
    };
    Plan { members_known: known, members_answering: answering, quorum_lost: lost, candidates, chosen, steps, alternative, loss }
}

#[derive(Debug, Clone)]
pub struct Prepare {
    pub from_data_dir: Option<PathBuf>,
    pub from_snapshot: Option<PathBuf>,
    /// The member built here (with `all_members`, the member whose host this is; any of them).
    pub name: String,
    pub peer_url: String,
    pub client_url: Option<String>,
    /// The new data dir; with `all_members`, a template with `{name}`.
    pub data_dir: PathBuf,
    /// Every member of the new cluster (etcd's `--initial-cluster`): all of them start at once
    /// from the same data and elect a leader, with no `member add`. None: a one-member cluster,
    /// the others re-added one at a time.
    pub initial_cluster: Option<String>,
    /// With `initial_cluster`: build every member's data dir here, not only `name`'s.
    pub all_members: bool,
    pub token: String,
    pub bump_revision: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Prepared {
    pub restore: RestoreReport,
    /// How to start each member built here (one line per member).
    pub start_commands: Vec<String>,
    /// With --initial-cluster: the members of the new cluster not built here, each to be
    /// restored on its own host the same way (same --initial-cluster and token) and started.
    pub elsewhere: Vec<String>,
    /// The source cluster's other members (from its db), to add back one at a time (a
    /// one-member recovery only).
    pub others: Vec<ReAdd>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReAdd {
    pub name: String,
    pub peer_urls: Vec<String>,
}

/// Build the new cluster's data dir(s): one member (re-add the others), or with an initial
/// cluster every member at once from the same data.
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
    let initial = p.initial_cluster.clone().unwrap_or_else(|| format!("{}={}", p.name, p.peer_url));
    let cluster = ClusterSpec::new(&initial, &p.token).map_err(etcd_data::restore::RestoreError::from)?;
    let me = cluster.members.iter().find(|m| m.name == p.name).ok_or_else(|| {
        Error::Usage(format!(
            "--name {} is not in --initial-cluster ({}): name the member whose host this is",
            p.name,
            cluster.members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", ")
        ))
    })?;
    let mut built: Vec<_> = if p.all_members { cluster.members.iter().collect() } else { vec![me] };
    built.sort_by(|a, b| a.name.cmp(&b.name));
    if p.all_members && built.len() > 1 && !p.data_dir.to_string_lossy().contains("{name}") {
        return Err(Error::Usage("with --all-members, --data-dir must contain {name} (one directory per member)".into()));
    }
    let targets: Vec<Target> = built
        .iter()
        .map(|m| Target {
            name: m.name.clone(),
            data_dir: if p.all_members { etcd_data::restore::expand(&p.data_dir, &m.name) } else { p.data_dir.clone() },
            wal_dir: None,
        })
        .collect();
    let stored = etcd_data::cluster::stored_members(&db).unwrap_or_default();
    let opts = RestoreOptions {
        snapshot: db,
        cluster: cluster.clone(),
        targets: targets.clone(),
        skip_hash_check: skip_hash,
        proven_by: None,
        bump_revision: p.bump_revision,
        mark_compacted: p.bump_revision.is_some(),
        target_version: None,
        lease_grace: None,
        source: None,
    };
    // The source's other members, to re-add (a one-member recovery).
    let mut others: Vec<ReAdd> = if p.initial_cluster.is_some() {
        Vec::new()
    } else {
        stored
            .iter()
            .filter(|m| !m.name.is_empty() && m.name != p.name && !m.peer_urls.contains(&p.peer_url))
            .map(|m| ReAdd { name: m.name.clone(), peer_urls: m.peer_urls.clone() })
            .collect()
    };
    others.sort_by(|a, b| a.name.cmp(&b.name));
    let report = restore(&opts, &|_, _| {})?;
    // Client URLs: the one given for this member, else what the source's db recorded for a
    // member of that name (etcd 3.5 keeps only names and peer URLs there), else none: the
    // member's usual client URL flags then go with it.
    let client_of = |name: &str| -> Option<String> {
        if name == p.name {
            if let Some(c) = &p.client_url {
                return Some(c.clone());
            }
        }
        stored.iter().find(|m| m.name == name && !m.client_urls.is_empty()).map(|m| m.client_urls.join(","))
    };
    let state = if cluster.members.len() > 1 { " --initial-cluster-state new" } else { "" };
    // `targets` were made from `built`, one for one.
    let start_commands = built
        .iter()
        .zip(&targets)
        .map(|(m, t)| {
            let peer = m.peer_urls.join(",");
            let client = match client_of(&m.name) {
                Some(c) => format!("--listen-client-urls {c} --advertise-client-urls {c}"),
                None => "(with its usual --listen-client-urls and --advertise-client-urls)".into(),
            };
            format!(
                "etcd --name {} --data-dir {} --listen-peer-urls {peer} --initial-advertise-peer-urls {peer} --initial-cluster {initial}{state} --initial-cluster-token {} {client}",
                m.name,
                t.data_dir.display(),
                p.token
            )
        })
        .collect();
    let elsewhere = cluster.members.iter().filter(|m| !targets.iter().any(|t| t.name == m.name)).map(|m| m.name.clone()).collect();
    Ok(Prepared { restore: report, start_commands, elsewhere, others })
}
