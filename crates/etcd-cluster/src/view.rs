//! What the cluster looks like right now: members, each endpoint's status, alarms.

use etcd_client::{AlarmAction, AlarmType};
use futures::future::join_all;
use serde::Serialize;

use crate::conn::ConnConfig;
use crate::error::{Error, Result};

/// etcd's default `--quota-backend-bytes` (2 GiB) when a server does not report its quota.
pub const DEFAULT_QUOTA: i64 = 2 * 1024 * 1024 * 1024;

#[derive(Debug, Clone, Serialize)]
pub struct MemberInfo {
    pub id: String,
    #[serde(skip)]
    pub id_num: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

impl MemberInfo {
    /// A member that was added but has not started yet has no name and no client URLs.
    pub fn started(&self) -> bool {
        !self.name.is_empty()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct EndpointStatus {
    pub endpoint: String,
    pub id: String,
    #[serde(skip)]
    pub id_num: u64,
    /// The cluster ID from the response header (hex).
    pub cluster_id: String,
    pub name: String,
    pub version: String,
    pub db_size: i64,
    pub db_size_in_use: i64,
    pub fragmentation_percent: f64,
    pub quota: i64,
    pub quota_reported: bool,
    pub quota_used_percent: f64,
    pub is_leader: bool,
    pub is_learner: bool,
    pub raft_term: u64,
    pub raft_index: u64,
    pub raft_applied_index: u64,
    pub revision: i64,
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Alarm {
    pub member_id: String,
    pub alarm: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterView {
    pub members: Vec<MemberInfo>,
    pub statuses: Vec<EndpointStatus>,
    /// Endpoints that did not answer, with why.
    pub unreachable: Vec<(String, String)>,
    pub leader: Option<String>,
    pub alarms: Vec<Alarm>,
}

impl ClusterView {
    pub fn quorum_size(&self) -> usize {
        self.voters() / 2 + 1
    }
    pub fn voters(&self) -> usize {
        self.members.iter().filter(|m| !m.is_learner).count()
    }
    pub fn status_of(&self, id: u64) -> Option<&EndpointStatus> {
        self.statuses.iter().find(|s| s.id_num == id)
    }
    pub fn name_of(&self, id: u64) -> String {
        self.members.iter().find(|m| m.id_num == id).map(|m| m.name.clone()).unwrap_or_default()
    }
    /// Voting members whose endpoint answered.
    pub fn healthy_voters(&self) -> usize {
        self.members.iter().filter(|m| !m.is_learner && self.status_of(m.id_num).is_some_and(|s| s.errors.is_empty())).count()
    }
}

pub(crate) fn hex(id: u64) -> String {
    format!("{id:x}")
}

/// Status of one endpoint.
pub async fn endpoint_status(cfg: &ConnConfig, endpoint: &str, quota_fallback: i64) -> Result<EndpointStatus> {
    let mut c = cfg.connect_one(endpoint).await?;
    let s = cfg.timed(endpoint, "status", c.status()).await?;
    let h = s.header().ok_or_else(|| Error::Rpc { endpoint: endpoint.into(), op: "status", msg: "no header".into() })?;
    let (db, in_use) = (s.db_size(), s.raft_used_db_size());
    let reported = s.db_size_quota();
    let quota = if reported > 0 { reported } else { quota_fallback };
    Ok(EndpointStatus {
        endpoint: cfg.url(endpoint),
        id: hex(h.member_id()),
        id_num: h.member_id(),
        cluster_id: hex(h.cluster_id()),
        name: String::new(),
        version: s.version().to_string(),
        db_size: db,
        db_size_in_use: in_use,
        fragmentation_percent: if db > 0 { (db - in_use).max(0) as f64 * 100.0 / db as f64 } else { 0.0 },
        quota,
        quota_reported: reported > 0,
        quota_used_percent: if quota > 0 { db as f64 * 100.0 / quota as f64 } else { 0.0 },
        is_leader: s.leader() == h.member_id(),
        is_learner: s.is_learner(),
        raft_term: s.raft_term(),
        raft_index: s.raft_index(),
        raft_applied_index: s.raft_applied_index(),
        revision: h.revision(),
        errors: s.errors().to_vec(),
    })
}

/// Look at every endpoint at once; member list and alarms from the first that answers.
pub async fn observe(cfg: &ConnConfig, quota_fallback: i64) -> Result<ClusterView> {
    let results = join_all(cfg.endpoints.iter().map(|e| endpoint_status(cfg, e, quota_fallback))).await;
    let mut statuses = Vec::new();
    let mut unreachable = Vec::new();
    for (e, r) in cfg.endpoints.iter().zip(results) {
        match r {
            Ok(s) => statuses.push(s),
            Err(err) => unreachable.push((cfg.url(e), err.reason())),
        }
    }
    let Some(first) = statuses.first() else {
        let why = unreachable.iter().map(|(e, w)| format!("{e}: {w}")).collect::<Vec<_>>().join("; ");
        return Err(Error::Connect { endpoint: cfg.endpoints.join(","), msg: format!("no endpoint answered ({why})") });
    };
    let ep = first.endpoint.clone();
    let mut c = cfg.connect_one(&ep).await?;
    let ml = cfg.timed(&ep, "member list", c.member_list()).await?;
    let members: Vec<MemberInfo> = ml
        .members()
        .iter()
        .map(|m| MemberInfo {
            id: hex(m.id()),
            id_num: m.id(),
            name: m.name().to_string(),
            peer_urls: m.peer_urls().to_vec(),
            client_urls: m.client_urls().to_vec(),
            is_learner: m.is_learner(),
        })
        .collect();
    // Alarms need a quorum; without one, report none rather than fail the whole view.
    let alarms = match cfg.timed(&ep, "alarm list", c.alarm(AlarmAction::Get, AlarmType::None, None)).await {
        Ok(a) => a
            .alarms()
            .iter()
            .map(|a| Alarm {
                member_id: hex(a.member_id()),
                alarm: match a.alarm() {
                    AlarmType::Nospace => "NOSPACE".into(),
                    AlarmType::Corrupt => "CORRUPT".into(),
                    AlarmType::None => "NONE".into(),
                },
            })
            .collect(),
        Err(_) => vec![],
    };
    // Members not covered by --endpoints: ask them at their advertised client URLs, so the
    // view is of the whole cluster whichever endpoints were given.
    let missing: Vec<&MemberInfo> = members.iter().filter(|m| m.started() && !statuses.iter().any(|s| s.id_num == m.id_num)).collect();
    let extra = join_all(missing.iter().map(|m| async move {
        let mut why = "the member advertises no client URL".to_string();
        for u in &m.client_urls {
            match endpoint_status(cfg, u, quota_fallback).await {
                Ok(s) => return Ok(s),
                Err(e) => why = e.reason(),
            }
        }
        Err((m.client_urls.first().cloned().unwrap_or_else(|| m.id.clone()), why))
    }))
    .await;
    for r in extra {
        match r {
            Ok(s) if !statuses.iter().any(|x| x.id_num == s.id_num) => statuses.push(s),
            Ok(_) => {}
            Err((u, why)) if !unreachable.iter().any(|(e, _)| *e == cfg.url(&u)) => unreachable.push((cfg.url(&u), why)),
            Err(_) => {}
        }
    }
    for s in &mut statuses {
        s.name = members.iter().find(|m| m.id_num == s.id_num).map(|m| m.name.clone()).unwrap_or_default();
    }
    let leader = statuses.iter().find(|s| s.is_leader).map(|s| s.id.clone());
    Ok(ClusterView { members, statuses, unreachable, leader, alarms })
}

/// A client on one answering member (the leader when it answers): mutations sent through a
/// balanced client fail when they are routed to a dead endpoint.
pub async fn connect_live(cfg: &ConnConfig, view: &ClusterView) -> Result<(etcd_client::Client, String)> {
    let s = view
        .statuses
        .iter()
        .find(|s| s.is_leader)
        .or_else(|| view.statuses.first())
        .ok_or_else(|| Error::Connect { endpoint: cfg.endpoints.join(","), msg: "no member answers".into() })?;
    Ok((cfg.connect_one(&s.endpoint).await?, s.endpoint.clone()))
}

/// HashKV of every reachable member at one revision: (revision, [(endpoint, hash)]).
pub async fn hashkv_agreement(cfg: &ConnConfig, view: &ClusterView) -> Result<(i64, Vec<(String, u32)>)> {
    let rev = view.statuses.iter().map(|s| s.revision).min().unwrap_or(0);
    let mut out = Vec::new();
    for s in &view.statuses {
        let mut c = cfg.connect_one(&s.endpoint).await?;
        let h = cfg.timed(&s.endpoint, "hashkv", c.hash_kv(rev)).await?;
        out.push((s.endpoint.clone(), h.hash()));
    }
    Ok((rev, out))
}

/// Whether one member serves a linearizable read (it is in a cluster with quorum).
pub async fn healthy(cfg: &ConnConfig, endpoint: &str) -> bool {
    let Ok(mut c) = cfg.connect_one(endpoint).await else { return false };
    cfg.timed(endpoint, "get health", c.get("health", None)).await.is_ok()
}
