//! A pack object read back from the bucket: `repo::format::decode_pack` on the input as it
//! is (an attacker without the key), and on a pack built from it with its header sealed
//! under the key (an attacker with it): input = u16 LE blob-area length, the blob area, then
//! the header plaintext (`QPK1`, count, entries). Each blob the header lists is then
//! unframed (`format::unframe`, stored or zstd) as `Repository::open_blob` does after
//! authenticating it. Errors are fine; panics, hangs and unbounded allocation are not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use repo::format::{decode_pack, unframe};

#[path = "common/mod.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let key = common::master_key();
    let _ = decode_pack(key, data);
    if data.len() < 2 {
        return;
    }
    let n = (u16::from_le_bytes([data[0], data[1]]) as usize).min(data.len() - 2);
    let (blobs, header) = data[2..].split_at(n);
    let sealed = key.seal(header, b"pack-header");
    let mut pack = Vec::with_capacity(blobs.len() + sealed.len() + 4);
    pack.extend_from_slice(blobs);
    pack.extend_from_slice(&sealed);
    pack.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
    if let Ok(entries) = decode_pack(key, &pack) {
        for e in entries.iter().take(64) {
            let at = e.offset as usize;
            let _ = unframe(&pack[at..at + e.length as usize], e.plain_len as usize);
        }
    }
});
