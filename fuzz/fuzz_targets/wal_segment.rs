//! etcd's WAL as `quorum` reads it from a member's data dir: `etcd_data::wal::identity` on a
//! `member/wal` directory whose first segment holds the input. Errors are fine; panics, hangs
//! and unbounded allocation are not.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common/mod.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let dir = common::scratch("wal");
    let seg = dir.join(etcd_data::wal::FIRST_SEGMENT);
    std::fs::write(&seg, data).unwrap();
    let _ = etcd_data::wal::identity(&dir);
});
