//! A backup's key map segment (a data blob, `QKM1`) read back from the bucket:
//! `repo::keymap::decode`, then each entry's revision key as etcd's `key` bucket key
//! (`etcd_data::schema::RevisionKey::parse`), as a reader checks the records it fetches.
//! Errors are fine; panics, hangs and unbounded allocation are not.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(entries) = repo::keymap::decode(data) {
        for e in entries.iter().take(1024) {
            let _ = etcd_data::schema::RevisionKey::parse(&e.rev_key);
        }
    }
});
