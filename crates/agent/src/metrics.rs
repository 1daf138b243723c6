//! The agent's Prometheus metrics, served on `/metrics` in the Prometheus text exposition
//! format 0.0.4 (`text/plain; version=0.0.4`), encoded by the `prometheus` crate: the format
//! every Prometheus server scrapes and `promtool check metrics` lints.
//!
//! The cluster an agent belongs to is on one info series, `quorum_agent_info{etcd_cluster,
//! agent, version} 1`, not on every series (the Prometheus guidance for exporters: cluster-wide
//! labels are the scraper's target labels; `etcd_cluster` does not clash with a `cluster` target
//! label). `deploy/prometheus-rules.yaml` joins on it: `... * on(job, instance)
//! group_left(etcd_cluster) quorum_agent_info`.
//!
//! Per-member series say what this agent observed last: a member that does not answer has
//! `quorum_etcd_member_healthy 0` and no size, quota or fragmentation series (they are removed,
//! not left at their last value); when no endpoint answers at all, `quorum_cluster_observed`
//! is 0, every member known from earlier observations is unhealthy and the alarm series are
//! removed.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use prometheus::{Gauge, GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// The Content-Type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The operations counted in `quorum_operation_runs_total` / `quorum_operation_failures_total`
/// (each exported from the start, at 0, so `increase()` sees its first failure).
pub const OPERATIONS: [&str; 7] = ["backup", "forget", "prune", "drill", "consolidate", "defrag", "capture"];

/// Every metric the agent exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub info: IntGaugeVec,
    pub is_leader: IntGauge,
    pub cluster_observed: IntGauge,
    pub last_observation_timestamp: Gauge,
    pub last_full_backup_timestamp: Gauge,
    pub last_full_backup_revision: IntGauge,
    pub last_full_backup_duration: Gauge,
    pub last_full_backup_added_bytes: IntGauge,
    pub backup_max_interval: Gauge,
    pub repository_read_timestamp: Gauge,
    pub last_verified_timestamp: Gauge,
    pub last_verified_age: Gauge,
    pub drill_overdue: IntGauge,
    pub uploaded_bytes: IntCounter,
    pub failures: IntCounterVec,
    pub runs: IntCounterVec,
    pub db_size: IntGaugeVec,
    pub db_size_in_use: IntGaugeVec,
    pub quota: IntGaugeVec,
    pub fragmentation: GaugeVec,
    pub member_healthy: IntGaugeVec,
    pub alarms: IntGaugeVec,
    pub defrag_min_fragmentation: Gauge,
    pub defrag_min_db_size: IntGauge,
    pub defrags: IntCounter,
    pub last_delta_revision: IntGauge,
    pub last_delta_timestamp: Gauge,
    pub delta_segments: IntCounter,
    pub rpo_lag: Gauge,
    pub rpo_breached: IntGauge,
    pub delta_enabled: IntGauge,
    pub capture_running: IntGauge,
    /// The delta spool (`crate::spool`).
    pub spool: crate::spool::SpoolMetrics,
    /// Member labels with series, and the member name of each endpoint URL seen.
    members: Arc<Mutex<Members>>,
}

#[derive(Default)]
struct Members {
    /// Member labels of the per-member series now exported (the members of the last view).
    exported: BTreeSet<String>,
    /// `(member, alarm)` pairs now exported.
    alarms: BTreeSet<(String, String)>,
    /// Endpoint or client URL → member name, from the last view.
    names: BTreeMap<String, String>,
}

pub(crate) fn int_gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::with_opts(Opts::new(name, help)).expect("valid metric name")
}

pub(crate) fn gauge(name: &str, help: &str) -> Gauge {
    Gauge::with_opts(Opts::new(name, help)).expect("valid metric name")
}

pub(crate) fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::with_opts(Opts::new(name, help)).expect("valid metric name")
}

fn int_gauges(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric name")
}

pub(crate) fn register<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: &C) {
    r.register(Box::new(c.clone())).expect("each metric is registered once");
}

impl Metrics {
    /// The metrics of agent `agent` of cluster `cluster`, registered.
    pub fn new(cluster: &str, agent: &str) -> Metrics {
        let member = &["member"];
        let m = Metrics {
            registry: Registry::new_custom(Some("quorum".into()), None).expect("valid prefix"),
            info: int_gauges("agent_info", "Always 1: the etcd cluster this agent serves, its name and version", &["etcd_cluster", "agent", "version"]),
            is_leader: int_gauge("agent_is_leader", "1 when this agent leads its cluster's backups"),
            cluster_observed: int_gauge("cluster_observed", "1 when the last observation of the cluster got an answer from at least one endpoint"),
            last_observation_timestamp: gauge("last_observation_timestamp_seconds", "Unix time of the last observation of the cluster that got an answer"),
            last_full_backup_timestamp: gauge(
                "last_full_backup_timestamp_seconds",
                "Unix time of the cluster's newest full backup in the repository (0: none)",
            ),
            last_full_backup_revision: int_gauge("last_full_backup_revision", "etcd revision of the cluster's newest full backup in the repository"),
            last_full_backup_duration: gauge("last_full_backup_duration_seconds", "How long this agent's last full backup took"),
            last_full_backup_added_bytes: int_gauge("last_full_backup_added_bytes", "Bytes this agent's last full backup added to the repository"),
            backup_max_interval: gauge(
                "backup_schedule_max_interval_seconds",
                "Longest time between two runs of backup.schedule: a newer full backup is due within it",
            ),
            repository_read_timestamp: gauge("repository_read_timestamp_seconds", "Unix time the backup and drill records were last read from the repository"),
            last_verified_timestamp: gauge(
                "last_verified_timestamp_seconds",
                "Unix time of the cluster's newest successful restore drill in the repository (0: none)",
            ),
            last_verified_age: gauge("last_verified_age_seconds", "Seconds since the last successful restore drill (-1: none)"),
            drill_overdue: int_gauge("drill_overdue", "1 when the last successful drill is older than drill.max_age_hours"),
            uploaded_bytes: counter("uploaded_bytes_total", "Bytes this agent uploaded to the repository"),
            failures: IntCounterVec::new(Opts::new("operation_failures_total", "Failed operations by kind"), &["operation"]).expect("valid"),
            runs: IntCounterVec::new(Opts::new("operation_runs_total", "Finished operations by kind"), &["operation"]).expect("valid"),
            db_size: int_gauges("etcd_db_size_bytes", "Member db size", member),
            db_size_in_use: int_gauges("etcd_db_size_in_use_bytes", "Member db size in use", member),
            quota: int_gauges("etcd_quota_bytes", "Member backend quota (the configured value when etcd does not report it)", member),
            fragmentation: GaugeVec::new(Opts::new("etcd_fragmentation_ratio", "Free share of the member db, 0..1"), member).expect("valid"),
            member_healthy: int_gauges("etcd_member_healthy", "1 when the member answers status without errors, 0 when it does not answer", member),
            alarms: int_gauges("etcd_alarm", "1 for each active alarm", &["member", "alarm"]),
            defrag_min_fragmentation: gauge("defrag_min_fragmentation_ratio", "defrag.min_fragmentation as a ratio, 0..1"),
            defrag_min_db_size: int_gauge("defrag_min_db_size_bytes", "defrag.min_db_size"),
            defrags: counter("defrags_total", "Members defragmented by the agent"),
            last_delta_revision: int_gauge("last_delta_revision", "Last etcd revision stored in a delta segment"),
            last_delta_timestamp: gauge("last_delta_timestamp_seconds", "Unix time the last delta segment was stored"),
            delta_segments: counter("delta_segments_total", "Delta segments stored"),
            rpo_lag: gauge("rpo_lag_seconds", "Seconds of changes not yet in the repository (0 when etcd has nothing newer)"),
            rpo_breached: int_gauge("rpo_breached", "1 when rpo_lag_seconds exceeds delta.rpo_alert_seconds"),
            delta_enabled: int_gauge("delta_enabled", "1 when delta.enabled: the leader captures deltas continuously"),
            capture_running: int_gauge("capture_running", "1 while this agent captures deltas"),
            spool: crate::spool::SpoolMetrics::default(),
            members: Arc::default(),
        };
        m.info.with_label_values(&[cluster, agent, env!("CARGO_PKG_VERSION")]).set(1);
        for op in OPERATIONS {
            m.runs.with_label_values(&[op]);
            m.failures.with_label_values(&[op]);
        }
        let r = &m.registry;
        register(r, &m.info);
        register(r, &m.is_leader);
        register(r, &m.cluster_observed);
        register(r, &m.last_observation_timestamp);
        register(r, &m.last_full_backup_timestamp);
        register(r, &m.last_full_backup_revision);
        register(r, &m.last_full_backup_duration);
        register(r, &m.last_full_backup_added_bytes);
        register(r, &m.backup_max_interval);
        register(r, &m.repository_read_timestamp);
        register(r, &m.last_verified_timestamp);
        register(r, &m.last_verified_age);
        register(r, &m.drill_overdue);
        register(r, &m.uploaded_bytes);
        register(r, &m.failures);
        register(r, &m.runs);
        register(r, &m.db_size);
        register(r, &m.db_size_in_use);
        register(r, &m.quota);
        register(r, &m.fragmentation);
        register(r, &m.member_healthy);
        register(r, &m.alarms);
        register(r, &m.defrag_min_fragmentation);
        register(r, &m.defrag_min_db_size);
        register(r, &m.defrags);
        register(r, &m.last_delta_revision);
        register(r, &m.last_delta_timestamp);
        register(r, &m.delta_segments);
        register(r, &m.rpo_lag);
        register(r, &m.rpo_breached);
        register(r, &m.delta_enabled);
        register(r, &m.capture_running);
        m.spool.register(r);
        m
    }

    fn members(&self) -> std::sync::MutexGuard<'_, Members> {
        self.members.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Set the per-member series from a cluster view: members that answered get their status,
    /// members that did not are unhealthy and lose their other series, members no longer in
    /// the cluster lose all of them.
    pub fn observe(&self, view: &etcd_cluster::ClusterView, now_unix: f64) {
        let mut g = self.members();
        // Names of today's members; an endpoint that does not answer keeps the name it had.
        let mut names: BTreeMap<String, String> = view.unreachable.iter().filter_map(|(ep, _)| g.names.get(ep).map(|n| (ep.clone(), n.clone()))).collect();
        for m in view.members.iter().filter(|m| m.started()) {
            for u in &m.client_urls {
                names.insert(u.clone(), m.name.clone());
            }
        }
        for s in view.statuses.iter().filter(|s| !s.name.is_empty()) {
            names.insert(s.endpoint.clone(), s.name.clone());
        }
        g.names = names;
        let label = |g: &Members, endpoint: &str, name: &str| {
            if !name.is_empty() {
                name.to_string()
            } else {
                g.names.get(endpoint).cloned().unwrap_or_else(|| endpoint.to_string())
            }
        };
        let mut answered = BTreeSet::new();
        for s in &view.statuses {
            let l = label(&g, &s.endpoint, &s.name);
            self.db_size.with_label_values(&[&l]).set(s.db_size);
            self.db_size_in_use.with_label_values(&[&l]).set(s.db_size_in_use);
            self.quota.with_label_values(&[&l]).set(s.quota);
            self.fragmentation.with_label_values(&[&l]).set(s.fragmentation_percent / 100.0);
            self.member_healthy.with_label_values(&[&l]).set(i64::from(s.errors.is_empty()));
            answered.insert(l);
        }
        let mut silent = BTreeSet::new();
        for (ep, _) in &view.unreachable {
            silent.insert(label(&g, ep, ""));
        }
        for m in view.members.iter().filter(|m| m.started() && !answered.contains(&m.name)) {
            silent.insert(m.name.clone());
        }
        silent.retain(|l| !answered.contains(l));
        for l in &silent {
            self.member_healthy.with_label_values(&[l]).set(0);
            self.remove_status(l);
        }
        let now: BTreeSet<String> = answered.union(&silent).cloned().collect();
        for gone in g.exported.difference(&now) {
            self.remove_status(gone);
            let _ = self.member_healthy.remove_label_values(&[gone]);
        }
        g.exported = now;
        let alarms: BTreeSet<(String, String)> = view
            .alarms
            .iter()
            .map(|a| (view.statuses.iter().find(|s| s.id == a.member_id).map(|s| s.name.clone()).unwrap_or_else(|| a.member_id.clone()), a.alarm.clone()))
            .collect();
        for (member, alarm) in g.alarms.difference(&alarms) {
            let _ = self.alarms.remove_label_values(&[member, alarm]);
        }
        for (member, alarm) in &alarms {
            self.alarms.with_label_values(&[member, alarm]).set(1);
        }
        g.alarms = alarms;
        self.cluster_observed.set(1);
        self.last_observation_timestamp.set(now_unix);
    }

    /// No endpoint answered: every member known so far is unhealthy (from where this agent
    /// stands), their other series and the alarms are removed, and `quorum_cluster_observed`
    /// is 0.
    pub fn observe_failed(&self) {
        let mut g = self.members();
        for l in &g.exported {
            self.remove_status(l);
            self.member_healthy.with_label_values(&[l]).set(0);
        }
        for (member, alarm) in std::mem::take(&mut g.alarms) {
            let _ = self.alarms.remove_label_values(&[&member, &alarm]);
        }
        self.cluster_observed.set(0);
    }

    fn remove_status(&self, member: &str) {
        let _ = self.db_size.remove_label_values(&[member]);
        let _ = self.db_size_in_use.remove_label_values(&[member]);
        let _ = self.quota.remove_label_values(&[member]);
        let _ = self.fragmentation.remove_label_values(&[member]);
    }

    /// Count one finished operation.
    pub fn op(&self, name: &str, ok: bool) {
        self.runs.with_label_values(&[name]).inc();
        if !ok {
            self.failures.with_label_values(&[name]).inc();
        }
    }

    /// The exposition text ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        prometheus::TextEncoder::new().encode_to_string(&self.registry.gather()).expect("encoding to a String cannot fail")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_cluster::view::{Alarm, MemberInfo};
    use etcd_cluster::{ClusterView, EndpointStatus};

    fn member(id: u64, name: &str, url: &str) -> MemberInfo {
        MemberInfo { id: format!("{id:x}"), id_num: id, name: name.into(), peer_urls: vec![], client_urls: vec![url.into()], is_learner: false }
    }

    fn status(id: u64, name: &str, url: &str) -> EndpointStatus {
        EndpointStatus {
            endpoint: url.into(),
            id: format!("{id:x}"),
            id_num: id,
            cluster_id: "c".into(),
            name: name.into(),
            version: "3.5.16".into(),
            db_size: 1000,
            db_size_in_use: 600,
            fragmentation_percent: 40.0,
            quota: 2 << 30,
            quota_reported: true,
            quota_used_percent: 0.0,
            is_leader: id == 1,
            is_learner: false,
            raft_term: 2,
            raft_index: 10,
            raft_applied_index: 10,
            revision: 5,
            errors: vec![],
        }
    }

    fn samples(m: &Metrics) -> Vec<String> {
        m.encode().lines().filter(|l| !l.starts_with('#')).map(str::to_string).collect()
    }

    #[test]
    fn a_silent_member_is_unhealthy_and_loses_its_status() {
        let m = Metrics::new("prod", "a0");
        let members = vec![member(1, "m0", "http://h0:2379"), member(2, "m1", "http://h1:2379")];
        let mut v = ClusterView {
            members: members.clone(),
            statuses: vec![status(1, "m0", "http://h0:2379"), status(2, "m1", "http://h1:2379")],
            unreachable: vec![],
            leader: Some("1".into()),
            alarms: vec![Alarm { member_id: "2".into(), alarm: "NOSPACE".into() }],
        };
        m.observe(&v, 100.0);
        let s = samples(&m);
        assert!(s.contains(&r#"quorum_etcd_member_healthy{member="m1"} 1"#.to_string()), "{s:?}");
        assert!(s.contains(&r#"quorum_etcd_alarm{alarm="NOSPACE",member="m1"} 1"#.to_string()), "{s:?}");
        assert!(s.contains(&"quorum_cluster_observed 1".to_string()), "{s:?}");
        // m1 stops answering: unhealthy, no size series, its alarm is gone with the answer.
        v.statuses.pop();
        v.unreachable.push(("http://h1:2379".into(), "deadline exceeded".into()));
        v.alarms.clear();
        m.observe(&v, 110.0);
        let s = samples(&m);
        assert!(s.contains(&r#"quorum_etcd_member_healthy{member="m1"} 0"#.to_string()), "{s:?}");
        assert!(!s.iter().any(|l| l.contains(r#"member="m1""#) && !l.starts_with("quorum_etcd_member_healthy")), "{s:?}");
        assert!(s.contains(&r#"quorum_etcd_db_size_bytes{member="m0"} 1000"#.to_string()), "{s:?}");
        // Nothing answers: every known member is unhealthy, no status series remain.
        m.observe_failed();
        let s = samples(&m);
        assert!(s.contains(&r#"quorum_etcd_member_healthy{member="m0"} 0"#.to_string()), "{s:?}");
        assert!(s.contains(&r#"quorum_etcd_member_healthy{member="m1"} 0"#.to_string()), "{s:?}");
        assert!(!s.iter().any(|l| l.starts_with("quorum_etcd_db_size_bytes") || l.starts_with("quorum_etcd_fragmentation_ratio")), "{s:?}");
        assert!(s.contains(&"quorum_cluster_observed 0".to_string()), "{s:?}");
        assert!(s.contains(&"quorum_last_observation_timestamp_seconds 110".to_string()), "{s:?}");
        // m1 removed from the cluster: its series go.
        v.members.pop();
        v.unreachable.clear();
        m.observe(&v, 120.0);
        let s = samples(&m);
        assert!(!s.iter().any(|l| l.contains(r#"member="m1""#)), "{s:?}");
        assert!(s.contains(&r#"quorum_etcd_member_healthy{member="m0"} 1"#.to_string()), "{s:?}");
    }

    #[test]
    fn text_format_0_0_4_with_counters_named_total() {
        let m = Metrics::new("prod", "a0");
        m.op("backup", false);
        m.uploaded_bytes.inc_by(5);
        let t = m.encode();
        assert!(t.contains("# TYPE quorum_uploaded_bytes_total counter\nquorum_uploaded_bytes_total 5\n"), "{t}");
        assert!(t.contains(r#"quorum_operation_failures_total{operation="backup"} 1"#), "{t}");
        assert!(t.contains(r#"quorum_operation_failures_total{operation="drill"} 0"#), "{t}");
        assert!(t.contains(&format!(r#"quorum_agent_info{{agent="a0",etcd_cluster="prod",version="{}"}} 1"#, env!("CARGO_PKG_VERSION"))), "{t}");
        assert!(!t.contains("# EOF"), "{t}");
    }
}
