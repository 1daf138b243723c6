//! `quorum agent`: a long-running process beside each etcd member.
//!
//! * One agent per cluster leads at a time ([`election`], etcd's own election API on a lease);
//!   the leader takes scheduled full backups into the repository, applies retention, runs
//!   restore drills and auto-defrag; every agent serves `/metrics`, `/healthz`, `/readyz`.
//! * Schedules are cron expressions ([`schedule`]); auto-defrag follows OpenShift's etcd
//!   operator thresholds by default ([`defrag`]).
pub mod capture;
pub mod config;
pub mod daemon;
pub mod defrag;
pub mod election;
pub mod log;
pub mod metrics;
pub mod schedule;
pub mod spool;
