//! A delta segment read back from the bucket: `repo::delta::open_segment` (name check,
//! authentication, zstd, header JSON, records), on the input as it is (no key) and sealed
//! under the key. Input = mode byte, then the zstd stream itself (mode odd) or the plaintext
//! (`QDS1`, header length, header JSON, records), which the target compresses. The object
//! name is made to match: its revisions are the header's (when the plaintext holds one) and
//! its hash the stored bytes'. The decoded records are then turned into `key`-bucket entries
//! as a point-in-time restore does (`etcd_data::replay::revision_entries`). Errors are fine;
//! panics, hangs and unbounded allocation are not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use repo::delta::{open_segment, segment_name, SegmentHeader};

#[path = "common/mod.rs"]
mod common;

/// The header's revision range, read from a plaintext segment the way `open_segment` does
/// (without its checks): for naming the object only.
fn range_of(plain: &[u8]) -> Option<(i64, i64)> {
    let hl = u32::from_le_bytes(plain.get(4..8)?.try_into().ok()?) as usize;
    let h: SegmentHeader = serde_json::from_slice(plain.get(8..8usize.checked_add(hl)?)?).ok()?;
    Some((h.first_revision, h.last_revision))
}

fuzz_target!(|data: &[u8]| {
    let key = common::master_key();
    let _ = open_segment(key, "clusters/c/deltas/00000000000000000001-00000000000000000001-0000000000000000", data);
    let Some((mode, rest)) = data.split_first() else { return };
    let (z, range) = if mode & 1 == 1 {
        // The range for the name from a bounded peek at the stream.
        let peek = zstd::bulk::decompress(rest, 1 << 16).ok();
        (rest.to_vec(), peek.as_deref().and_then(range_of))
    } else {
        (common::zstd1(rest), range_of(rest))
    };
    let (first, last) = range.filter(|(f, l)| *f >= 1 && f <= l).unwrap_or((1, 1));
    let stored = key.seal(&z, b"delta");
    let name = segment_name("c", first, last, &stored);
    if let Ok(seg) = open_segment(key, &name, &stored) {
        for r in seg.records.iter().take(1024) {
            let _ = etcd_data::replay::revision_entries(&r.changes());
        }
    }
});
