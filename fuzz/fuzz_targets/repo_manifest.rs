//! The sealed JSON objects of a repository read back from the bucket, through
//! `repo::format::open_json` (as `Repository::read_manifest`, the drill's and forget's
//! readers do): a backup manifest (and the blob ids it names, `repository::parse_id`), a
//! drill's verification, forget's retention record, and a bundle's file table; and the
//! plaintext `config` object. The input is sealed under the key first; it is also opened as
//! it is (no key). Errors are fine; panics, hangs and unbounded allocation are not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use repo::format::{open_json, BundleFile, Config, Manifest, Verification};
use repo::prune::RetentionRecord;
use repo::repository::parse_id;

#[path = "common/mod.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let key = common::master_key();
    let _ = open_json::<Manifest>(key, data, b"manifest", "raw");
    let sealed = key.seal(data, b"manifest");
    if let Ok(m) = open_json::<Manifest>(key, &sealed, b"manifest", "fuzz") {
        for id in m.chunk_lists.iter().chain(m.bundle.iter().flat_map(|b| b.blobs.iter().chain([&b.table]))).take(256) {
            let _ = parse_id(id);
        }
    }
    let _ = open_json::<Verification>(key, &key.seal(data, b"verification"), b"verification", "fuzz");
    let _ = open_json::<RetentionRecord>(key, &key.seal(data, b"retention"), b"retention", "fuzz");
    let _ = serde_json::from_slice::<Vec<BundleFile>>(data);
    let _ = serde_json::from_slice::<Config>(data);
});
