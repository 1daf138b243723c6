//! Membership changes that cannot cost quorum: add (with the exact flags to start the new
//! member, and optionally waiting until it has caught up), remove, and replace (remove a dead
//! member, add its successor).

use std::time::{Duration, Instant};

use etcd_client::MemberAddOptions;
use serde::Serialize;

use crate::conn::ConnConfig;
use crate::error::{Error, Result};
use crate::view::{connect_live, healthy, hex, observe, ClusterView};

#[derive(Debug, Clone, Serialize)]
pub struct Added {
    pub id: String,
    pub name: String,
    pub peer_urls: Vec<String>,
    /// `ETCD_*` variables that start the new member (`--initial-cluster-state existing`).
    pub env: Vec<(String, String)>,
    /// The same as etcd flags.
    pub flags: Vec<String>,
}

fn find<'a>(view: &'a ClusterView, who: &str) -> Result<&'a crate::view::MemberInfo> {
    view.members.iter().find(|m| m.name == who || m.id == who.to_lowercase()).ok_or_else(|| {
        let known = view.members.iter().map(|m| format!("{} ({})", m.name, m.id)).collect::<Vec<_>>().join(", ");
        Error::Usage(format!("no member named or with ID {who:?}; members: {known}"))
    })
}

/// Would removing `id` leave a quorum of healthy voters in the smaller cluster?
pub fn check_remove(view: &ClusterView, id: u64) -> Result<()> {
    let m = view.members.iter().find(|m| m.id_num == id).ok_or_else(|| Error::Usage(format!("unknown member {id:x}")))?;
    if m.is_learner {
        return Ok(());
    }
    let voters_after = view.voters() - 1;
    let healthy_after = view.healthy_voters() - usize::from(view.status_of(id).is_some_and(|s| s.errors.is_empty()));
    let quorum_after = voters_after / 2 + 1;
    if voters_after == 0 || healthy_after < quorum_after {
        return Err(Error::Refused(format!(
            "removing {} ({}) would leave {healthy_after} healthy of {voters_after} voting members, below the quorum of {quorum_after}",
            m.name, m.id
        )));
    }
    Ok(())
}

/// Adding a voter raises the quorum: the healthy voters must reach the larger cluster's quorum
/// (etcd's `IsReadyToAddVotingMember`), except when growing a one-member cluster to two, the
/// documented way to rebuild after a restore (the cluster waits for the new member to start).
pub fn check_add(view: &ClusterView, learner: bool) -> Result<()> {
    if let Some(m) = view.members.iter().find(|m| !m.started()) {
        return Err(Error::Refused(format!("member {} was added but has not started; start it (or remove it) before adding another", m.id)));
    }
    let growing_from_one = view.voters() == 1 && view.healthy_voters() == 1;
    if !(learner || growing_from_one) {
        let quorum_after = view.voters().div_ceil(2) + 1;
        if view.healthy_voters() < quorum_after {
            return Err(Error::Refused(format!(
                "only {} of {} voting members are healthy; a new voter would need {quorum_after} to keep quorum while it starts",
                view.healthy_voters(),
                view.voters()
            )));
        }
    }
    Ok(())
}

/// No member but `leaving` (one about to be removed) is named `name`.
fn name_free(view: &ClusterView, name: &str, leaving: Option<u64>) -> Result<()> {
    if view.members.iter().any(|m| m.name == name && Some(m.id_num) != leaving) {
        return Err(Error::Usage(format!("a member named {name:?} already exists")));
    }
    Ok(())
}

pub async fn add(cfg: &ConnConfig, name: &str, peer_urls: &[String], learner: bool) -> Result<Added> {
    let view = observe(cfg, 0).await?;
    name_free(&view, name, None)?;
    check_add(&view, learner)?;
    let (mut c, ep) = connect_live(cfg, &view).await?;
    // etcd accepts a new voter only when every member has been connected for its health
    // interval (5 s); right after a member joined it answers "unhealthy cluster": wait it out.
    let deadline = Instant::now() + Duration::from_secs(20);
    let r = loop {
        let opts = learner.then(|| MemberAddOptions::new().with_is_learner());
        match cfg.timed(&ep, "member add", c.member_add(peer_urls.to_vec(), opts)).await {
            Err(Error::Rpc { msg, .. }) if msg.contains("unhealthy cluster") && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            other => break other?,
        }
    };
    let new = r.member().ok_or_else(|| Error::Rpc { endpoint: ep.clone(), op: "member add", msg: "no member in response".into() })?;
    let mut initial: Vec<String> = Vec::new();
    for m in r.member_list() {
        let n = if m.id() == new.id() { name.to_string() } else { m.name().to_string() };
        for u in m.peer_urls() {
            initial.push(format!("{n}={u}"));
        }
    }
    let env = vec![
        ("ETCD_NAME".to_string(), name.to_string()),
        ("ETCD_INITIAL_CLUSTER".to_string(), initial.join(",")),
        ("ETCD_INITIAL_ADVERTISE_PEER_URLS".to_string(), peer_urls.join(",")),
        ("ETCD_INITIAL_CLUSTER_STATE".to_string(), "existing".to_string()),
    ];
    let flags = vec![
        format!("--name={name}"),
        format!("--initial-cluster={}", initial.join(",")),
        format!("--initial-advertise-peer-urls={}", peer_urls.join(",")),
        "--initial-cluster-state=existing".to_string(),
    ];
    Ok(Added { id: hex(new.id()), name: name.to_string(), peer_urls: peer_urls.to_vec(), env, flags })
}

/// Where a new member stands while [`wait_caught_up`] waits for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Joining {
    /// Its etcd has not published itself to the cluster yet (the member has no name).
    NotStarted,
    /// Started; it does not serve reads yet.
    NotServing,
    /// Serves reads; its applied index is `applied` of the `target` it must reach.
    CatchingUp { applied: u64, target: u64 },
}

impl std::fmt::Display for Joining {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Joining::NotStarted => write!(f, "its etcd has not joined the cluster"),
            Joining::NotServing => write!(f, "it started but does not serve reads"),
            Joining::CatchingUp { applied, target } => write!(f, "it has applied index {applied} of {target}"),
        }
    }
}

/// Wait until member `id` has started (it has a name), serves reads, and its applied index
/// has reached the leader's index as it was when the wait began. `report` is told where the
/// member stands every [`REPORT_EVERY`] while it waits. A member that does not get there in
/// `timeout` is an [`Error::NotJoined`]: it stays in the membership.
pub async fn wait_caught_up(cfg: &ConnConfig, id: &str, timeout: Duration, report: &(dyn Fn(Duration, &Joining) + Sync)) -> Result<()> {
    let start = Instant::now();
    let deadline = start + timeout;
    let mut next_report = start + REPORT_EVERY;
    let mut target = None;
    let mut state = Joining::NotStarted;
    loop {
        if let Ok(view) = observe(cfg, 0).await {
            if target.is_none() {
                target = view.statuses.iter().find(|s| s.is_leader).map(|s| s.raft_index);
            }
            if let Some(m) = view.members.iter().find(|m| m.id == id && m.started()) {
                // A member seen started once is not taken back to not started (nor, from
                // catching up, to not serving) by one poll that missed it.
                if state == Joining::NotStarted {
                    state = Joining::NotServing;
                }
                for url in &m.client_urls {
                    if healthy(cfg, url).await {
                        let mut c = cfg.connect_one(url).await?;
                        if let Ok(s) = cfg.timed(url, "status", c.status()).await {
                            let target = target.unwrap_or(0);
                            if s.raft_applied_index() >= target {
                                return Ok(());
                            }
                            state = Joining::CatchingUp { applied: s.raft_applied_index(), target };
                        }
                    }
                }
            }
        }
        let now = Instant::now();
        if now > deadline {
            let quorum_lost = observe(cfg, 0).await.map_or(true, |v| v.healthy_voters() < v.quorum_size());
            return Err(Error::NotJoined { id: id.to_string(), what: format!("did not start and catch up ({state})"), timeout, quorum_lost });
        }
        if now >= next_report {
            report(now - start, &state);
            next_report = now + REPORT_EVERY;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How often [`wait_caught_up`] reports.
pub const REPORT_EVERY: Duration = Duration::from_secs(15);

pub async fn remove(cfg: &ConnConfig, who: &str) -> Result<String> {
    let view = observe(cfg, 0).await?;
    let m = find(&view, who)?;
    check_remove(&view, m.id_num)?;
    let (mut c, ep) = connect_live(cfg, &view).await?;
    cfg.timed(&ep, "member remove", c.member_remove(m.id_num)).await?;
    Ok(m.id.clone())
}

/// Replace a dead member: refuse if it is alive or the removal would cost quorum.
pub async fn replace(cfg: &ConnConfig, old: &str, name: &str, peer_urls: &[String]) -> Result<(String, Added)> {
    let view = observe(cfg, 0).await?;
    let m = find(&view, old)?;
    if view.status_of(m.id_num).is_some_and(|s| s.errors.is_empty()) {
        return Err(Error::Refused(format!(
            "member {} ({}) is alive and answering; replace is for dead members (use member remove deliberately)",
            m.name, m.id
        )));
    }
    check_remove(&view, m.id_num)?;
    // The add must pass its checks once the old member is gone: checked first, so that a
    // refusal changes nothing.
    name_free(&view, name, Some(m.id_num))?;
    let mut after = view.clone();
    after.members.retain(|x| x.id_num != m.id_num);
    after.statuses.retain(|s| s.id_num != m.id_num);
    check_add(&after, false)?;
    let removed = remove(cfg, &m.id).await?;
    let added = add(cfg, name, peer_urls, false).await.map_err(|e| Error::HalfReplaced { removed: removed.clone(), source: Box::new(e) })?;
    Ok((removed, added))
}
