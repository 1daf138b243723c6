//! The agent's YAML configuration as `quorum agent` loads it: `agent::config::Config::load`
//! (parse and `validate`, which parses the cron schedules) on a file holding the input, then
//! the derived values the daemon computes from it. Errors are fine; panics, hangs and
//! unbounded allocation are not.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common/mod.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let path = common::scratch("agent").join("agent.yaml");
    std::fs::write(&path, data).unwrap();
    if let Ok(c) = agent::config::Config::load(&path) {
        let _ = c.agent_name();
        let _ = c.delta.spool_max_bytes();
        let _ = c.delta.spool_dir_for(&c.cluster);
    }
});
