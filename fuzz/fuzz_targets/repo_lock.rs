//! A lock object (`locks/<rand>`, `clusters/<C>/locks/<rand>`, plaintext JSON) read back from
//! the bucket, as `lock::list_in` reads it: `serde_json` into `lock::LockInfo`, then
//! `LockInfo::is_stale` with and without the store's last-modified time. Errors are fine;
//! panics, hangs and unbounded allocation are not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use repo::lock::LockInfo;

fuzz_target!(|data: &[u8]| {
    let Ok(info) = serde_json::from_slice::<LockInfo>(data) else { return };
    let _ = info.is_stale(None);
    let _ = info.is_stale(Some(chrono::Utc::now()));
    let _ = info.is_stale(Some(chrono::DateTime::<chrono::Utc>::MIN_UTC));
});
