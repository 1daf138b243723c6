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
    /// Where the value sits in the `key` bucket (for [`Reader::value`]).
    pub rev: Revision,
}

fn damaged(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::Damaged(format!("{}: {what} (run `quorum snapshot verify` on it)", path.display()))
}

/// Point reads of single values from a snapshot file, by the revision [`for_each`] reported:
/// a partial migration re-reads the values it writes, one batch at a time, instead of holding
/// them.
pub struct Reader {
    db: bolt::Db,
    path: std::path::PathBuf,
}

impl Reader {
    pub fn open(path: &Path) -> Result<Reader> {
        let db = bolt::Db::open(path).map_err(|e| damaged(path, e))?;
        Ok(Reader { db, path: path.to_path_buf() })
    }

    /// The value of `key` stored at `rev`.
    pub fn value(&self, key: &[u8], rev: Revision) -> Result<Vec<u8>> {
        let path = &self.path;
        let bucket = self.db.bucket(&[KEY]).map_err(|f| damaged(path, f))?.ok_or_else(|| damaged(path, "no key bucket"))?;
        let raw = bucket.get(&rev.to_bytes()).map_err(|f| damaged(path, f))?.ok_or_else(|| damaged(path, format!("revision {} vanished", rev.main)))?;
        let kv = KeyValueRef::decode(&raw).ok_or_else(|| damaged(path, format!("revision {}: malformed KeyValue", rev.main)))?;
        if kv.key != key {
            return Err(damaged(path, format!("revision {}: holds another key than the index said", rev.main)));
        }
        Ok(kv.value.to_vec())
    }
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
        emit(SourceKv { key, value: kv.value.to_vec(), group, mod_revision: kv.mod_revision, lease: kv.lease, rev })?;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small etcd-shaped db (a `key` bucket of 200 revisions over several leaf pages and a
    /// `meta` bucket), written with our bbolt writer.
    fn fixture() -> Vec<u8> {
        use prost::Message;
        let mut w = bolt::Writer::new(std::io::Cursor::new(Vec::new()), bolt::WriterOptions::default()).unwrap();
        w.begin_bucket(b"key").unwrap();
        for i in 2..202i64 {
            let kv = etcd_data::schema::KeyValue {
                key: format!("/registry/configmaps/ns-{}/cm-{i:03}", i % 3).into_bytes(),
                create_revision: i,
                mod_revision: i,
                version: 1,
                value: vec![b'x'; 100],
                lease: 0,
            };
            w.put(&etcd_data::schema::Revision { main: i, sub: 0 }.to_bytes(), &kv.encode_to_vec()).unwrap();
        }
        w.end_bucket().unwrap();
        w.begin_bucket(b"meta").unwrap();
        w.put(b"consistent_index", &201u64.to_be_bytes()).unwrap();
        w.end_bucket().unwrap();
        w.finish().unwrap().0.into_inner()
    }

    fn run(bytes: &[u8]) -> Result<u64> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.db");
        std::fs::write(&p, bytes).unwrap();
        for_each(&p, &Selection::Whole, &mut |_| Ok(()))
    }

    #[test]
    fn a_damaged_snapshot_is_damage_not_a_source_error() {
        let good = fixture();
        let n = run(&good).expect("the fixture reads");
        assert!(n > 0, "the fixture has live keys");
        assert!(matches!(run(b"not a bolt file at all, just text"), Err(Error::Damaged(_))));
        // Every page after the two meta pages overwritten: the key bucket cannot be read.
        let page = 4096;
        let mut bad = good.clone();
        for b in &mut bad[2 * page..] {
            *b = 0xa5;
        }
        match run(&bad) {
            Err(Error::Damaged(m)) => assert!(m.contains("snapshot verify"), "{m}"),
            other => panic!("want Damaged, got {other:?}"),
        }
    }
}
