//! When the agent defragments, by default as OpenShift's etcd operator does
//! (`cluster-etcd-operator` defragcontroller): a member whose fragmentation is at least 45 %
//! and whose db is at least 100 MB, checked every 11 minutes; one member at a time, followers
//! first and the leader last, only when every member is healthy, never during a backup
//! (the daemon holds one lock for both). A single-member cluster blocks all traffic while it
//! defragments, so it is defragmented only inside an explicitly configured UTC window.
use std::time::Duration;

use etcd_cluster::ClusterView;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DefragPolicy {
    pub enabled: bool,
    /// Minimum fragmentation, percent of the db that is free space.
    pub min_fragmentation: f64,
    /// Minimum db size in bytes.
    pub min_db_size: i64,
    /// How often to check, seconds.
    pub interval_seconds: u64,
    /// For single-member clusters: "HH:MM-HH:MM" (UTC) when defrag may run; none = never.
    pub single_member_window: Option<String>,
}

impl Default for DefragPolicy {
    fn default() -> Self {
        DefragPolicy { enabled: true, min_fragmentation: 45.0, min_db_size: 100 * 1000 * 1000, interval_seconds: 11 * 60, single_member_window: None }
    }
}

impl DefragPolicy {
    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_seconds.max(1))
    }
}

/// What to do now, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Nothing(String),
    Defrag(Vec<String>),
    Refused(String),
}

fn in_window(window: &str, now: chrono::NaiveTime) -> Result<bool, String> {
    let (a, b) = window.split_once('-').ok_or_else(|| format!("window {window:?}: want HH:MM-HH:MM"))?;
    let p = |s: &str| chrono::NaiveTime::parse_from_str(s.trim(), "%H:%M").map_err(|e| format!("window {window:?}: {e}"));
    let (a, b) = (p(a)?, p(b)?);
    Ok(if a <= b { now >= a && now < b } else { now >= a || now < b })
}

/// Decide from a cluster view at `now` (UTC).
pub fn decide(p: &DefragPolicy, view: &ClusterView, now: chrono::DateTime<chrono::Utc>) -> Decision {
    if !p.enabled {
        return Decision::Nothing("auto-defrag is disabled".into());
    }
    let due: Vec<String> = view
        .statuses
        .iter()
        .filter(|s| s.errors.is_empty() && s.fragmentation_percent >= p.min_fragmentation && s.db_size >= p.min_db_size)
        .map(|s| if s.name.is_empty() { s.endpoint.clone() } else { s.name.clone() })
        .collect();
    if due.is_empty() {
        return Decision::Nothing(format!("no member at or above {}% fragmentation with a db of at least {} bytes", p.min_fragmentation, p.min_db_size));
    }
    if !view.unreachable.is_empty() || view.statuses.iter().any(|s| !s.errors.is_empty()) {
        return Decision::Refused("a member is unhealthy: defrag waits for a healthy cluster".into());
    }
    if view.voters() == 1 {
        match &p.single_member_window {
            None => return Decision::Refused("single-member cluster: defrag blocks the only member; set defrag.single_member_window to allow it".into()),
            Some(w) => match in_window(w, now.time()) {
                Ok(true) => {}
                Ok(false) => return Decision::Refused(format!("single-member cluster: outside the window {w} (UTC)")),
                Err(e) => return Decision::Refused(e),
            },
        }
    }
    Decision::Defrag(due)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows() {
        let t = |h, m| chrono::NaiveTime::from_hms_opt(h, m, 0).unwrap();
        assert!(in_window("02:00-04:00", t(3, 0)).unwrap());
        assert!(!in_window("02:00-04:00", t(4, 0)).unwrap());
        assert!(in_window("23:00-01:00", t(0, 30)).unwrap());
        assert!(!in_window("23:00-01:00", t(12, 0)).unwrap());
        assert!(in_window("nonsense", t(1, 0)).is_err());
    }
}
