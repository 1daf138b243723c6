//! The agent's Prometheus metrics, served on `/metrics` in the Prometheus text exposition
//! format 0.0.4 (`text/plain; version=0.0.4`), encoded by the `prometheus` crate: the format
//! every Prometheus server scrapes and `promtool check metrics` lints.
//!
//! The cluster an agent belongs to is on one info series, `quorum_agent_info{etcd_cluster,
//! agent, version} 1`, not on every series (the Prometheus guidance for exporters: cluster-wide
//! labels are the scraper's target labels; `etcd_cluster` does not clash with a `cluster` target
//! label). Queries join on it: `... * on(job, instance) group_left(etcd_cluster)
//! quorum_agent_info`.
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
    pub last_full_backup_timestamp: Gauge,
    pub last_full_backup_revision: IntGauge,
    pub last_full_backup_duration: Gauge,
    pub last_full_backup_added_bytes: IntGauge,
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
    pub defrags: IntCounter,
    pub last_delta_revision: IntGauge,
    pub last_delta_timestamp: Gauge,
    pub delta_segments: IntCounter,
    pub rpo_lag: Gauge,
    pub rpo_breached: IntGauge,
    pub capture_running: IntGauge,
    /// The delta spool (`crate::spool`).
    pub spool: crate::spool::SpoolMetrics,
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
            last_full_backup_timestamp: gauge("last_full_backup_timestamp_seconds", "Unix time of the last full backup"),
            last_full_backup_revision: int_gauge("last_full_backup_revision", "etcd revision of the last full backup"),
            last_full_backup_duration: gauge("last_full_backup_duration_seconds", "How long the last full backup took"),
            last_full_backup_added_bytes: int_gauge("last_full_backup_added_bytes", "Bytes the last full backup added to the repository"),
            last_verified_timestamp: gauge("last_verified_timestamp_seconds", "Unix time of the last successful restore drill"),
            last_verified_age: gauge("last_verified_age_seconds", "Seconds since the last successful restore drill (-1: none)"),
            drill_overdue: int_gauge("drill_overdue", "1 when the last successful drill is older than drill.max_age_hours"),
            uploaded_bytes: counter("uploaded_bytes_total", "Bytes uploaded to the repository"),
            failures: IntCounterVec::new(Opts::new("operation_failures_total", "Failed operations by kind"), &["operation"]).expect("valid"),
            runs: IntCounterVec::new(Opts::new("operation_runs_total", "Finished operations by kind"), &["operation"]).expect("valid"),
            db_size: int_gauges("etcd_db_size_bytes", "Member db size", member),
            db_size_in_use: int_gauges("etcd_db_size_in_use_bytes", "Member db size in use", member),
            quota: int_gauges("etcd_quota_bytes", "Member backend quota (the configured value when etcd does not report it)", member),
            fragmentation: GaugeVec::new(Opts::new("etcd_fragmentation_ratio", "Free share of the member db, 0..1"), member).expect("valid"),
            member_healthy: int_gauges("etcd_member_healthy", "1 when the member answers status without errors", member),
            alarms: int_gauges("etcd_alarm", "1 for each active alarm", &["member", "alarm"]),
            defrags: counter("defrags_total", "Members defragmented by the agent"),
            last_delta_revision: int_gauge("last_delta_revision", "Last etcd revision stored in a delta segment"),
            last_delta_timestamp: gauge("last_delta_timestamp_seconds", "Unix time the last delta segment was stored"),
            delta_segments: counter("delta_segments_total", "Delta segments stored"),
            rpo_lag: gauge("rpo_lag_seconds", "Seconds of changes not yet in the repository (0 when etcd has nothing newer)"),
            rpo_breached: int_gauge("rpo_breached", "1 when rpo_lag_seconds exceeds delta.rpo_alert_seconds"),
            capture_running: int_gauge("capture_running", "1 while this agent captures deltas"),
            spool: crate::spool::SpoolMetrics::default(),
        };
        m.info.with_label_values(&[cluster, agent, env!("CARGO_PKG_VERSION")]).set(1);
        for op in OPERATIONS {
            m.runs.with_label_values(&[op]);
            m.failures.with_label_values(&[op]);
        }
        let r = &m.registry;
        register(r, &m.info);
        register(r, &m.is_leader);
        register(r, &m.last_full_backup_timestamp);
        register(r, &m.last_full_backup_revision);
        register(r, &m.last_full_backup_duration);
        register(r, &m.last_full_backup_added_bytes);
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
        register(r, &m.defrags);
        register(r, &m.last_delta_revision);
        register(r, &m.last_delta_timestamp);
        register(r, &m.delta_segments);
        register(r, &m.rpo_lag);
        register(r, &m.rpo_breached);
        register(r, &m.capture_running);
        m.spool.register(r);
        m
    }

    /// Update the per-member gauges from a cluster view.
    pub fn observe(&self, view: &etcd_cluster::ClusterView) {
        for s in &view.statuses {
            let l = if s.name.is_empty() { s.endpoint.clone() } else { s.name.clone() };
            self.db_size.with_label_values(&[&l]).set(s.db_size);
            self.db_size_in_use.with_label_values(&[&l]).set(s.db_size_in_use);
            self.quota.with_label_values(&[&l]).set(s.quota);
            self.fragmentation.with_label_values(&[&l]).set(s.fragmentation_percent / 100.0);
            self.member_healthy.with_label_values(&[&l]).set(i64::from(s.errors.is_empty()));
        }
        for (ep, _) in &view.unreachable {
            self.member_healthy.with_label_values(&[ep]).set(0);
        }
        self.alarms.reset();
        for a in &view.alarms {
            let member = view.statuses.iter().find(|s| s.id == a.member_id).map(|s| s.name.clone()).unwrap_or_else(|| a.member_id.clone());
            self.alarms.with_label_values(&[&member, &a.alarm]).set(1);
        }
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
