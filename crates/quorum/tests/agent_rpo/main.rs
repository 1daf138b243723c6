//! The agent's continuous capture: recovery point under load (its own binary: it measures time).
//!
//! One test binary per group of test modules: linking is most of a rebuild.

#[path = "../common/mod.rs"]
mod common;

mod agent_rpo;
