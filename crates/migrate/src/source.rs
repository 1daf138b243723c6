//! The selected live keys of a snapshot file (a backup reassembled from the repository), in
//! key order, read straight from its bbolt `key` bucket.
//!
//! Pass 1 walks the bucket (revision order) and keeps, for every selected key, its latest
//! revision and whether that is a tombstone; pass 2 looks each live key's revision up (point
//! reads, key order). Memory holds the index (key and revision per selected key), never more
//! than one value at a time.

use std::collections::BTreeMap;
use std::path::Path;

use etcd_data::schema::{KeyValueRef, Revision, RevisionKey, KEY};

use crate::select::Selection;
use crate::{Error, Result};

/// One live key at the snapshot's revision.
#[derive(Debug, Clone)]
pub struct SourceKv {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub group: String,
    pub mod_revision: i64,
    pub lease: i64,
}

fn damaged(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::Source(format!("{}: {what} (run `quorum snapshot verify` on it)", path.display()))
}

/// Call `emit` for every selected live key of the snapshot at `path`, in key order.
pub fn for_each(path: &Path, selection: &Selection, emit: &mut dyn FnMut(SourceKv) -> Result<()>) -> Result<u64> {
    let db = bolt::Db::open(path).map_err(|e| damaged(path, e))?;
    let Some(bucket) = db.bucket(&[KEY]).map_err(|f| damaged(path, f))? else { return Ok(0) };
    let mut latest: BTreeMap<Vec<u8>, (Revision, bool, String)> = BTreeMap::new();
    let mut c = bucket.cursor().map_err(|f| damaged(path, f))?;
    while let Some(e) = c.next().map_err(|f| damaged(path, f))? {
        let rk = RevisionKey::parse(e.key).map_err(|m| damaged(path, format!("key bucket: {m}")))?;
        if e.value.is_empty() {
            continue; // the bump marker of a restored, bumped db
        }
        let kv = KeyValueRef::decode(e.value).ok_or_else(|| damaged(path, format!("revision {}: malformed KeyValue", rk.rev.main)))?;
        if let Some(slot) = latest.get_mut(kv.key) {
            slot.0 = rk.rev;
            slot.1 = rk.tombstone;
        } else if let Some(g) = selection.group_of(kv.key) {
            latest.insert(kv.key.to_vec(), (rk.rev, rk.tombstone, g));
        }
    }
    let mut n = 0u64;
    for (key, (rev, tomb, group)) in latest {
        if tomb {
            continue;
        }
        let raw = bucket.get(&rev.to_bytes()).map_err(|f| damaged(path, f))?.ok_or_else(|| damaged(path, format!("revision {} vanished", rev.main)))?;
        let kv = KeyValueRef::decode(&raw).ok_or_else(|| damaged(path, format!("revision {}: malformed KeyValue", rev.main)))?;
        emit(SourceKv { key, value: kv.value.to_vec(), group, mod_revision: kv.mod_revision, lease: kv.lease })?;
        n += 1;
    }
    Ok(n)
}

/// Every selected live key, collected (partial migrations: the selection is what moves).
pub fn collect(path: &Path, selection: &Selection) -> Result<Vec<SourceKv>> {
    let mut out = Vec::new();
    for_each(path, selection, &mut |kv| {
        out.push(kv);
        Ok(())
    })?;
    Ok(out)
}
