//! Running clusters: live operations, migration, and the agent.
//!
//! One test binary per group of test modules: linking is most of a rebuild.

#[path = "../common/mod.rs"]
mod common;

mod agent;
mod agent_ops;
mod auth;
mod live_cluster;
mod migrate;
mod migrate_sync;
