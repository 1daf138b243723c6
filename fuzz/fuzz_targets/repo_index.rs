//! An index object read back from the bucket: `repo::format::decode_index` on the input as it
//! is (no key), and sealed under the key: input = mode byte, then either the zstd stream
//! itself (mode odd: decompression of hostile frames) or the plaintext (`QIX1`, packs and
//! their entries), which the target compresses. Errors are fine; panics, hangs and unbounded
//! allocation are not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use repo::format::decode_index;

#[path = "common/mod.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let key = common::master_key();
    let _ = decode_index(key, data, "fuzz");
    let Some((mode, rest)) = data.split_first() else { return };
    let z = if mode & 1 == 1 { rest.to_vec() } else { common::zstd1(rest) };
    let _ = decode_index(key, &key.seal(&z, b"index"), "fuzz");
});
