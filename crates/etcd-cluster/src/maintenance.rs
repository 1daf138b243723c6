//! Rolling defragmentation and alarms.
//!
//! Defrag blocks the member it runs on (reads and writes wait), so it goes one member at a
//! time: followers first, the leader last, each only when its fragmentation is at least
//! `--min-fragmentation`; after each, the member must serve a linearizable read again, then
//! `--pause` passes (60 s by default, the etcd operations guide's minimum) before the next.
//! It refuses to start when any member is unreachable or reports errors.

use std::time::{Duration, Instant};

use etcd_client::{AlarmAction, AlarmOptions, AlarmType};
use serde::Serialize;

use crate::conn::ConnConfig;
use crate::error::{Error, Result};
use crate::view::{healthy, observe, Alarm, ClusterView};

#[derive(Debug, Clone)]
pub struct DefragOptions {
    pub min_fragmentation: f64,
    pub pause: Duration,
    pub dry_run: bool,
    pub disarm: bool,
    pub quota_fallback: i64,
    /// How long a member may take to serve reads again after its defrag.
    pub recover_timeout: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct DefragStep {
    pub endpoint: String,
    pub name: String,
    pub id: String,
    pub leader: bool,
    pub db_size: i64,
    pub db_size_in_use: i64,
    pub fragmentation_percent: f64,
    pub action: String,
    pub db_size_after: Option<i64>,
    pub seconds: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DefragReport {
    pub steps: Vec<DefragStep>,
    pub alarms_before: Vec<Alarm>,
    pub alarms_disarmed: Vec<Alarm>,
    pub alarms_left: Vec<Alarm>,
}

/// The plan: followers in `--endpoints` order, then the leader.
pub fn plan(view: &ClusterView, opts: &DefragOptions) -> Result<Vec<DefragStep>> {
    if !view.unreachable.is_empty() {
        let list = view.unreachable.iter().map(|(e, w)| format!("{e} ({w})")).collect::<Vec<_>>().join(", ");
        return Err(Error::Refused(format!("not every member is healthy: {list}; defrag would cost availability")));
    }
    // A NOSPACE alarm shows up as a member error; defrag is its remedy, so only other errors refuse.
    let blocking = |s: &&crate::view::EndpointStatus| s.errors.iter().any(|e| !e.contains("alarm:NOSPACE"));
    if let Some(s) = view.statuses.iter().find(blocking) {
        return Err(Error::Refused(format!("member {} reports errors: {}", s.endpoint, s.errors.join("; "))));
    }
    let mut order: Vec<_> = view.statuses.iter().filter(|s| !s.is_leader).collect();
    order.extend(view.statuses.iter().filter(|s| s.is_leader));
    Ok(order
        .into_iter()
        .map(|s| DefragStep {
            endpoint: s.endpoint.clone(),
            name: s.name.clone(),
            id: s.id.clone(),
            leader: s.is_leader,
            db_size: s.db_size,
            db_size_in_use: s.db_size_in_use,
            fragmentation_percent: s.fragmentation_percent,
            action: if s.fragmentation_percent >= opts.min_fragmentation {
                "defrag".into()
            } else {
                format!("skip: fragmentation {:.1}% < {:.1}%", s.fragmentation_percent, opts.min_fragmentation)
            },
            db_size_after: None,
            seconds: None,
        })
        .collect())
}

/// Run the rolling defrag; `on_step` is told about each step as it finishes.
pub async fn defrag(cfg: &ConnConfig, opts: &DefragOptions, on_step: &(dyn Fn(&DefragStep) + Sync)) -> Result<DefragReport> {
    defrag_watched(cfg, opts, on_step, &|_, _| {}).await
}

/// [`defrag`], also telling `on_wait(what, remaining)` what it waits for: every second of the
/// pause between members (with the time left), the defragment call and the member's return to
/// service (no time left to give).
pub async fn defrag_watched(
    cfg: &ConnConfig,
    opts: &DefragOptions,
    on_step: &(dyn Fn(&DefragStep) + Sync),
    on_wait: &(dyn Fn(&str, Option<Duration>) + Sync),
) -> Result<DefragReport> {
    let view = observe(cfg, opts.quota_fallback).await?;
    let mut steps = plan(&view, opts)?;
    let alarms_before = view.alarms.clone();
    if opts.dry_run {
        return Ok(DefragReport { steps, alarms_before: alarms_before.clone(), alarms_disarmed: vec![], alarms_left: alarms_before });
    }
    let mut first = true;
    let mut steps_done: Vec<String> = Vec::new();
    for step in &mut steps {
        if step.action != "defrag" {
            on_step(step);
            continue;
        }
        if !first && !opts.pause.is_zero() {
            let end = Instant::now() + opts.pause;
            let what = format!("pausing before {} (--pause {:?})", step.name, opts.pause);
            while let Some(left) = end.checked_duration_since(Instant::now()).filter(|l| !l.is_zero()) {
                on_wait(&what, Some(left));
                tokio::time::sleep(left.min(Duration::from_secs(1))).await;
            }
        }
        first = false;
        let t0 = Instant::now();
        // Defragmenting rewrites the whole db: --command-timeout (5 s by default, as etcdctl's)
        // is far too short for a large one. Allow a minute plus 20 MB/s, never less than it.
        let allowance = Duration::from_secs(60) + Duration::from_secs_f64(step.db_size.max(0) as f64 / 20e6);
        let long = ConnConfig { command_timeout: cfg.command_timeout.max(allowance), ..cfg.clone() };
        on_wait(&format!("defragmenting {} ({}, up to {:.0?})", step.name, step.endpoint, long.command_timeout), None);
        let mut c = long.connect_one(&step.endpoint).await?;
        long.timed(&step.endpoint, "defragment", c.defragment()).await?;
        on_wait(&format!("waiting for {} to serve reads again", step.name), None);
        let deadline = Instant::now() + opts.recover_timeout;
        while !healthy(cfg, &step.endpoint).await {
            if Instant::now() > deadline {
                return Err(Error::Stopped {
                    why: format!("{} did not serve reads within {:?} after its defrag; stopping before the next member", step.endpoint, opts.recover_timeout),
                    done: defragmented(&steps_done, Some(&step.name)),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut c = cfg.connect_one(&step.endpoint).await?;
        let s = cfg.timed(&step.endpoint, "status", c.status()).await?;
        step.db_size_after = Some(s.db_size());
        step.seconds = Some(t0.elapsed().as_secs_f64());
        on_step(step);
        steps_done.push(step.name.clone());
    }
    let mut disarmed = vec![];
    let after = observe(cfg, opts.quota_fallback).await?;
    let mut left = after.alarms.clone();
    if opts.disarm && !left.is_empty() {
        let room = after.statuses.iter().all(|s| s.db_size < s.quota);
        if !room {
            return Err(Error::Stopped {
                why: "NOSPACE alarms stay armed: some member's db is still at or above its quota (compact first, then defrag)".into(),
                done: defragmented(&steps_done, None),
            });
        }
        disarmed = alarm_disarm(cfg, None).await?;
        left = observe(cfg, opts.quota_fallback).await?.alarms;
    }
    Ok(DefragReport { steps, alarms_before, alarms_disarmed: disarmed, alarms_left: left })
}

/// What a defrag stopped part way had done: the members defragmented, `also` last.
fn defragmented(done: &[String], also: Option<&str>) -> String {
    let names: Vec<&str> = done.iter().map(String::as_str).chain(also).collect();
    if names.is_empty() {
        "no member was defragmented".into()
    } else {
        format!("defragmented: {}", names.join(", "))
    }
}

/// Disarm every alarm (or those of one member); returns what was disarmed.
pub async fn alarm_disarm(cfg: &ConnConfig, member: Option<u64>) -> Result<Vec<Alarm>> {
    let view = observe(cfg, 0).await?;
    let (mut c, ep) = crate::view::connect_live(cfg, &view).await?;
    let list = cfg.timed(&ep, "alarm list", c.alarm(AlarmAction::Get, AlarmType::None, None)).await?;
    let mut done = Vec::new();
    for a in list.alarms() {
        if member.is_some_and(|m| m != a.member_id()) {
            continue;
        }
        let mut o = AlarmOptions::new();
        o.with_member(a.member_id());
        cfg.timed(&ep, "alarm disarm", c.alarm(AlarmAction::Deactivate, a.alarm(), Some(o))).await?;
        done.push(Alarm {
            member_id: crate::view::hex(a.member_id()),
            alarm: if a.alarm() == AlarmType::Nospace { "NOSPACE".into() } else { "CORRUPT".into() },
        });
    }
    Ok(done)
}
