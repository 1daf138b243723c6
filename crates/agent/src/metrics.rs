//! The agent's Prometheus metrics (text exposition format, `/metrics`).
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MemberLabels {
    pub member: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlarmLabels {
    pub member: String,
    pub alarm: String,
}

type FGauge = Gauge<f64, AtomicU64>;

/// Every metric the agent exports.
#[derive(Default, Clone)]
pub struct Metrics {
    pub is_leader: Gauge,
    pub last_full_backup_timestamp: FGauge,
    pub last_full_backup_revision: Gauge,
    pub last_full_backup_duration: FGauge,
    pub last_full_backup_added_bytes: Gauge,
    pub last_verified_timestamp: FGauge,
    pub last_verified_age: FGauge,
    pub drill_overdue: Gauge,
    pub uploaded_bytes: Counter,
    pub failures: Family<OpLabels, Counter>,
    pub runs: Family<OpLabels, Counter>,
    pub db_size: Family<MemberLabels, Gauge>,
    pub db_size_in_use: Family<MemberLabels, Gauge>,
    pub quota: Family<MemberLabels, Gauge>,
    pub fragmentation: Family<MemberLabels, FGauge>,
    pub member_healthy: Family<MemberLabels, Gauge>,
    pub alarms: Family<AlarmLabels, Gauge>,
    pub defrags: Counter,
    pub last_delta_revision: Gauge,
    pub last_delta_timestamp: FGauge,
    pub delta_segments: Counter,
    pub rpo_lag: FGauge,
    pub rpo_breached: Gauge,
    pub capture_running: Gauge,
    /// The delta spool (`crate::spool`).
    pub spool: crate::spool::SpoolMetrics,
}

impl Metrics {
    pub fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix("quorum");
        r.register("agent_is_leader", "1 when this agent leads its cluster's backups", self.is_leader.clone());
        r.register("last_full_backup_timestamp_seconds", "Unix time of the last full backup", self.last_full_backup_timestamp.clone());
        r.register("last_full_backup_revision", "etcd revision of the last full backup", self.last_full_backup_revision.clone());
        r.register("last_full_backup_duration_seconds", "How long the last full backup took", self.last_full_backup_duration.clone());
        r.register("last_full_backup_added_bytes", "Bytes the last full backup added to the repository", self.last_full_backup_added_bytes.clone());
        r.register("last_verified_timestamp_seconds", "Unix time of the last successful restore drill", self.last_verified_timestamp.clone());
        r.register("last_verified_age_seconds", "Seconds since the last successful restore drill", self.last_verified_age.clone());
        r.register("drill_overdue", "1 when the last successful drill is older than drill.max_age", self.drill_overdue.clone());
        r.register("uploaded_bytes", "Bytes uploaded to the repository", self.uploaded_bytes.clone());
        r.register("operation_failures", "Failed operations by kind", self.failures.clone());
        r.register("operation_runs", "Finished operations by kind", self.runs.clone());
        r.register("etcd_db_size_bytes", "Member db size", self.db_size.clone());
        r.register("etcd_db_size_in_use_bytes", "Member db size in use", self.db_size_in_use.clone());
        r.register("etcd_quota_bytes", "Member backend quota (the configured value when etcd does not report it)", self.quota.clone());
        r.register("etcd_fragmentation_ratio", "Free share of the member db, 0..1", self.fragmentation.clone());
        r.register("etcd_member_healthy", "1 when the member answers status without errors", self.member_healthy.clone());
        r.register("etcd_alarm", "1 for each active alarm", self.alarms.clone());
        r.register("defrags", "Members defragmented by the agent", self.defrags.clone());
        r.register("last_delta_revision", "Last etcd revision stored in a delta segment", self.last_delta_revision.clone());
        r.register("last_delta_timestamp_seconds", "Unix time the last delta segment was stored", self.last_delta_timestamp.clone());
        r.register("delta_segments", "Delta segments stored", self.delta_segments.clone());
        r.register("rpo_lag_seconds", "Seconds of changes not yet in the repository (0 when etcd has nothing newer)", self.rpo_lag.clone());
        r.register("rpo_breached", "1 when rpo_lag_seconds exceeds delta.rpo_alert_seconds", self.rpo_breached.clone());
        r.register("capture_running", "1 while this agent captures deltas", self.capture_running.clone());
        self.spool.register(&mut r);
        r
    }

    /// Update the per-member gauges from a cluster view.
    pub fn observe(&self, view: &etcd_cluster::ClusterView) {
        for s in &view.statuses {
            let l = MemberLabels { member: if s.name.is_empty() { s.endpoint.clone() } else { s.name.clone() } };
            self.db_size.get_or_create(&l).set(s.db_size);
            self.db_size_in_use.get_or_create(&l).set(s.db_size_in_use);
            self.quota.get_or_create(&l).set(s.quota);
            self.fragmentation.get_or_create(&l).set(s.fragmentation_percent / 100.0);
            self.member_healthy.get_or_create(&l).set(i64::from(s.errors.is_empty()));
        }
        for (ep, _) in &view.unreachable {
            self.member_healthy.get_or_create(&MemberLabels { member: ep.clone() }).set(0);
        }
        self.alarms.clear();
        for a in &view.alarms {
            let member = view.statuses.iter().find(|s| s.id == a.member_id).map(|s| s.name.clone()).unwrap_or_else(|| a.member_id.clone());
            self.alarms.get_or_create(&AlarmLabels { member, alarm: a.alarm.clone() }).set(1);
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry()).expect("encoding to a String cannot fail");
        out
    }
}
