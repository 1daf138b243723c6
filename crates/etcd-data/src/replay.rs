//! Offline replay of watch events onto a snapshot: the database step of a point-in-time
//! restore. The output is a bbolt file holding every bucket of the base snapshot unchanged,
//! with the `key` bucket extended by the replayed revisions, stored exactly as etcd's MVCC
//! store would have stored them had it applied those transactions itself.
//!
//! # What etcd stores for a transaction (3.4 `mvcc/kvstore_txn.go`, 3.5 `server/mvcc/kvstore_txn.go`)
//!
//! A write transaction at main revision `M = beginRev + 1` numbers its changes with the sub
//! revision `len(tw.changes)`, i.e. 0, 1, 2, … in the order the changes happen, puts and
//! deletes alike:
//! * `put`: key `revToBytes({M, sub})` (17 bytes), value `mvccpb.KeyValue{key, create_revision,
//!   mod_revision = M, version, value, lease}` marshalled (gogo: fields in order, zero values
//!   omitted);
//! * `delete`: key `revToBytes({M, sub})` followed by `'t'` (`appendMarkTombstone`, 18 bytes),
//!   value `mvccpb.KeyValue{key}` marshalled (nothing but field 1).
//!
//! The watch delivers the same changes in the same order (`watchable_store_txn.go` `End`: one
//! event per entry of `tw.changes`; a delete's event carries the key and `mod_revision = M`),
//! so the sub revision of a change is its index among the events of its revision.
//!
//! # What the output holds
//!
//! * every bucket of the base, entry for entry (meta and lease included: the native restore
//!   that follows rewrites `meta/consistent_index` and `meta/term` as `snapshot restore`
//!   does, so the restored member neither skips nor re-applies raft entries);
//! * the `key` bucket: the base's entries, then each replayed revision's entries. Revisions only
//!   grow, so the appended keys sort after the base's and the bulk writer streams them.
//!
//! Memory: one revision's changes at a time (the caller's iterator) and one page per tree
//! level for the copy.

use std::fs::OpenOptions;
use std::io::{BufWriter, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use bolt::{Visitor, WriteError, Writer, WriterOptions};
use prost::Message;

use crate::schema::{self, KeyValue, KeyValueRef, Revision, RevisionKey};
use crate::trailer::{self, Trailer};

/// One change of a revision, in the order the transaction made them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A put: the marshalled `mvccpb.KeyValue` as the watch delivered it (its `mod_revision`
    /// must be the revision's).
    Put { kv: Vec<u8> },
    /// A delete of `key`.
    Delete { key: Vec<u8> },
}

/// Every change of one main revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionChanges {
    pub revision: i64,
    pub changes: Vec<Change>,
}

/// What a replay wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReplayReport {
    /// The base's latest main revision (what `snapshot status` reports for it).
    pub base_revision: i64,
    /// The last replayed revision (the base's when nothing was replayed).
    pub last_revision: i64,
    pub revisions: u64,
    pub puts: u64,
    pub deletes: u64,
    /// Size of the written db.
    pub db_bytes: u64,
    /// The base's sha256 trailer (checked while copying).
    pub base_trailer: Trailer,
}

/// Why a replay failed; the output file is removed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Bolt(#[from] bolt::Error),
    #[error("{}: base snapshot is damaged: {count} faults; first: {first}", path.display())]
    Damaged { path: PathBuf, count: usize, first: String },
    #[error("{}: sha256 mismatch: the trailer says {expected}, the data hashes to {actual}", path.display())]
    HashMismatch { path: PathBuf, expected: String, actual: String },
    #[error("{}: {what}", path.display())]
    Schema { path: PathBuf, what: String },
    #[error("revision {revision}: {what}")]
    Event { revision: i64, what: String },
    #[error("reading the events: {0}")]
    Source(String),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("writing the new db: {0}")]
    Write(#[from] WriteError),
}

type Result<T> = std::result::Result<T, ReplayError>;

/// The stored value of a put: the marshalled `mvccpb.KeyValue` (prost emits fields in order and
/// omits zero values, as gogo's `Marshal` does).
pub fn encode_kv(kv: &KeyValue) -> Vec<u8> {
    kv.encode_to_vec()
}

/// The stored value of a delete: `mvccpb.KeyValue{key}`.
pub fn tombstone_value(key: &[u8]) -> Vec<u8> {
    KeyValue { key: key.to_vec(), ..Default::default() }.encode_to_vec()
}

/// A `key`-bucket entry: (revision key, value).
pub type Entry = (Vec<u8>, Vec<u8>);

/// The `key`-bucket entries of one revision, as etcd stores them.
pub fn revision_entries(rc: &RevisionChanges) -> Result<Vec<Entry>> {
    let bad = |what: String| ReplayError::Event { revision: rc.revision, what };
    let mut out = Vec::with_capacity(rc.changes.len());
    for (sub, c) in rc.changes.iter().enumerate() {
        let rev = Revision { main: rc.revision, sub: sub as i64 }.to_bytes();
        match c {
            Change::Put { kv } => {
                let v = KeyValueRef::decode(kv).ok_or_else(|| bad(format!("change {sub}: the put's KeyValue does not decode")))?;
                if v.key.is_empty() {
                    return Err(bad(format!("change {sub}: a put of an empty key")));
                }
                if v.mod_revision != rc.revision {
                    return Err(bad(format!("change {sub}: the put's mod_revision is {}", v.mod_revision)));
                }
                if v.create_revision < 1 || v.create_revision > rc.revision || v.version < 1 {
                    return Err(bad(format!("change {sub}: create_revision {} / version {} are impossible", v.create_revision, v.version)));
                }
                out.push((rev.to_vec(), kv.clone()));
            }
            Change::Delete { key } => {
                if key.is_empty() {
                    return Err(bad(format!("change {sub}: a delete of an empty key")));
                }
                let mut k = rev.to_vec();
                k.push(schema::MARK_TOMBSTONE);
                out.push((k, tombstone_value(key)));
            }
        }
    }
    Ok(out)
}

struct Copier<'a, W: Write + Seek> {
    w: Writer<W>,
    path: &'a Path,
    changes: &'a mut dyn Iterator<Item = std::result::Result<RevisionChanges, String>>,
    in_key: bool,
    key_done: bool,
    leases: &'a dyn Fn() -> Vec<(i64, i64)>,
    /// Leases still to write, ascending by id (taken when the lease bucket is reached).
    new_leases: Option<std::collections::VecDeque<(i64, i64)>>,
    in_lease: bool,
    lease_done: bool,
    base_latest: Revision,
    last: i64,
    revisions: u64,
    puts: u64,
    deletes: u64,
    error: Option<ReplayError>,
}

impl<W: Write + Seek> Copier<'_, W> {
    fn fail(&mut self, e: ReplayError) {
        if self.error.is_none() {
            self.error = Some(e);
        }
    }

    /// Append every replayed revision to the open `key` bucket.
    fn append(&mut self) -> Result<()> {
        self.last = self.base_latest.main;
        for rc in &mut *self.changes {
            let rc = rc.map_err(ReplayError::Source)?;
            if rc.revision <= self.last {
                return Err(ReplayError::Event {
                    revision: rc.revision,
                    what: format!("does not follow revision {} (revisions must grow past the base's)", self.last),
                });
            }
            if rc.changes.is_empty() {
                continue;
            }
            for (k, v) in revision_entries(&rc)? {
                self.w.put(&k, &v)?;
            }
            for c in &rc.changes {
                match c {
                    Change::Put { .. } => self.puts += 1,
                    Change::Delete { .. } => self.deletes += 1,
                }
            }
            self.revisions += 1;
            self.last = rc.revision;
        }
        Ok(())
    }

    /// Close the open top-level bucket (appending the replay when it is `key`, the new leases
    /// when it is `lease`).
    fn close(&mut self) -> Result<()> {
        if self.w.depth() == 0 {
            return Ok(());
        }
        if self.in_key {
            self.append()?;
            self.in_key = false;
            self.key_done = true;
        }
        if self.in_lease {
            self.leases_below(None)?;
            self.in_lease = false;
            self.lease_done = true;
        }
        self.w.end_bucket()?;
        Ok(())
    }

    /// Write the new leases whose id sorts before `next` (all, for `None`); one the base has
    /// (`next` equal) is the base's.
    fn leases_below(&mut self, next: Option<&[u8]>) -> Result<()> {
        let pending = self.new_leases.get_or_insert_with(|| {
            let mut v = (self.leases)();
            v.retain(|(id, _)| *id > 0);
            v.sort();
            v.dedup_by_key(|(id, _)| *id);
            v.into()
        });
        while let Some(&(id, ttl)) = pending.front() {
            let k = id.to_be_bytes();
            match next {
                Some(n) if k.as_slice() > n => break,
                Some(n) if k.as_slice() == n => {
                    pending.pop_front();
                    continue;
                }
                _ => {}
            }
            pending.pop_front();
            let v = prost::Message::encode_to_vec(&schema::Lease { id, ttl, remaining_ttl: 0 });
            self.w.put(&k, &v)?;
        }
        Ok(())
    }

    /// A `lease` bucket for a base that has none, placed in name order.
    fn lease_bucket_before(&mut self, next: Option<&[u8]>) -> Result<()> {
        if !self.lease_done && next.is_none_or(|n| n > schema::LEASE) {
            self.w.begin_bucket(schema::LEASE)?;
            self.in_lease = true;
            self.close()?;
        }
        Ok(())
    }

    /// A `key` bucket for a base that has none, placed in name order.
    fn key_bucket_before(&mut self, next: Option<&[u8]>) -> Result<()> {
        if !self.key_done && next.is_none_or(|n| n > schema::KEY) {
            self.w.begin_bucket(schema::KEY)?;
            self.in_key = true;
            self.close()?;
        }
        Ok(())
    }

    fn visit(&mut self, path: &[Vec<u8>], key: &[u8], value: Option<&[u8]>) -> Result<()> {
        match (path.len(), value) {
            (0, None) => {
                self.close()?;
                self.key_bucket_before(Some(key))?;
                self.lease_bucket_before(Some(key))?;
                self.w.begin_bucket(key)?;
                self.in_key = key == schema::KEY;
                self.in_lease = key == schema::LEASE;
                if self.in_lease {
                    self.lease_done = true;
                }
                Ok(())
            }
            (0, Some(_)) => Err(ReplayError::Schema { path: self.path.to_path_buf(), what: format!("top-level key {} is not a bucket", bolt::show(key)) }),
            (1, Some(v)) => {
                if self.in_key {
                    if let Ok(rk) = RevisionKey::parse(key) {
                        self.base_latest = self.base_latest.max(rk.rev);
                    }
                }
                if self.in_lease {
                    self.leases_below(Some(key))?;
                }
                self.w.put(key, v)?;
                Ok(())
            }
            _ => Err(ReplayError::Schema {
                path: self.path.to_path_buf(),
                what: format!("nested bucket {} inside {} (etcd writes none)", bolt::show(key), bolt::show(&path[0])),
            }),
        }
    }
}

impl<W: Write + Seek> Visitor for Copier<'_, W> {
    fn entry(&mut self, path: &[Vec<u8>], key: &[u8], value: Option<&[u8]>) {
        if self.error.is_some() {
            return;
        }
        if let Err(e) = self.visit(path, key, value) {
            self.fail(e);
        }
    }
}

/// Write `out` (which must not exist): the base snapshot at `base` plus every revision
/// `changes` yields (ascending, each above the base's latest revision). The base's sha256
/// trailer, when it has one, is checked on a second thread while copying.
/// `leases` is asked, once the `key` bucket is written (every change consumed), for leases
/// (id, granted TTL) to add to the `lease` bucket where the base has no entry of that id.
///
/// `source`: the base's bytes while they still arrive (see
/// [`crate::restore::RestoreOptions::source`]); `base` then names the file they arrive in, whose
/// trailer is hashed once they all have.
pub fn replay(
    base: &Path,
    source: Option<&crate::restore::SnapshotSource>,
    out: &Path,
    changes: &mut dyn Iterator<Item = std::result::Result<RevisionChanges, String>>,
    leases: &dyn Fn() -> Vec<(i64, i64)>,
) -> Result<ReplayReport> {
    let r = replay_inner(base, source, out, changes, leases);
    if r.is_err() {
        let _ = std::fs::remove_file(out);
    }
    r
}

fn replay_inner(
    base: &Path,
    source: Option<&crate::restore::SnapshotSource>,
    out: &Path,
    changes: &mut dyn Iterator<Item = std::result::Result<RevisionChanges, String>>,
    leases: &dyn Fn() -> Vec<(i64, i64)>,
) -> Result<ReplayReport> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| ReplayError::Io { path: p, source }
    };
    let db = match source {
        Some(s) => bolt::Db::open_source(base, s.bytes.clone(), s.len)?,
        None => bolt::Db::open(base)?,
    };
    let file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(out).map_err(io(out))?;
    let w = Writer::new(BufWriter::with_capacity(4 << 20, file), WriterOptions { freelist: bolt::FreelistMode::NotSynced, ..Default::default() })?;
    let mut c = Copier {
        w,
        path: base,
        changes,
        in_key: false,
        key_done: false,
        leases,
        new_leases: None,
        in_lease: false,
        lease_done: false,
        base_latest: Revision::default(),
        last: 0,
        revisions: 0,
        puts: 0,
        deletes: 0,
        error: None,
    };
    let (hash, report) = std::thread::scope(|s| {
        let hasher = s.spawn(|| {
            if let Some(src) = source {
                (src.all_arrived)().map_err(|e| crate::Error::Io { path: base.to_path_buf(), source: e })?;
            }
            trailer::check(base, |_| {})
        });
        let report = bolt::walk(&db, &mut c);
        (hasher.join().expect("hash thread"), report)
    });
    if let Some(first) = report.faults.first() {
        return Err(ReplayError::Damaged { path: base.to_path_buf(), count: report.fault_count, first: first.to_string() });
    }
    let base_trailer = hash.map_err(|e| match e {
        crate::Error::Io { path, source } => ReplayError::Io { path, source },
        other => ReplayError::Schema { path: base.to_path_buf(), what: other.to_string() },
    })?;
    if let Trailer::Mismatch { expected, actual } = &base_trailer {
        return Err(ReplayError::HashMismatch { path: base.to_path_buf(), expected: expected.clone(), actual: actual.clone() });
    }
    if let Some(e) = c.error.take() {
        return Err(e);
    }
    c.close()?;
    c.key_bucket_before(None)?;
    c.lease_bucket_before(None)?;
    let (base_latest, last, revisions, puts, deletes) = (c.base_latest.main, c.last.max(c.base_latest.main), c.revisions, c.puts, c.deletes);
    let (buf, stats) = c.w.finish()?;
    let file = buf.into_inner().map_err(|e| ReplayError::Io { path: out.to_path_buf(), source: e.into_error() })?;
    file.sync_all().map_err(io(out))?;
    Ok(ReplayReport { base_revision: base_latest, last_revision: last, revisions, puts, deletes, db_bytes: stats.bytes, base_trailer })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A small base db: `key` with two revisions, `lease` and `meta`.
    fn base(dir: &Path) -> PathBuf {
        let mut w = Writer::new(Cursor::new(Vec::new()), WriterOptions::default()).unwrap();
        w.begin_bucket(b"key").unwrap();
        let kv = KeyValue { key: b"a".to_vec(), create_revision: 2, mod_revision: 2, version: 1, value: b"1".to_vec(), lease: 0 };
        w.put(&Revision { main: 2, sub: 0 }.to_bytes(), &kv.encode_to_vec()).unwrap();
        let kv = KeyValue { key: b"b".to_vec(), create_revision: 3, mod_revision: 3, version: 1, value: b"2".to_vec(), lease: 7 };
        w.put(&Revision { main: 3, sub: 0 }.to_bytes(), &kv.encode_to_vec()).unwrap();
        w.end_bucket().unwrap();
        w.begin_bucket(b"lease").unwrap();
        w.put(&7i64.to_be_bytes(), &schema::Lease { id: 7, ttl: 60, remaining_ttl: 0 }.encode_to_vec()).unwrap();
        w.end_bucket().unwrap();
        w.begin_bucket(b"meta").unwrap();
        w.put(b"consistent_index", &9u64.to_be_bytes()).unwrap();
        w.end_bucket().unwrap();
        let (c, _) = w.finish().unwrap();
        let p = dir.join("base.db");
        std::fs::write(&p, c.into_inner()).unwrap();
        p
    }

    type Seen = (Vec<Vec<u8>>, Vec<u8>, Option<Vec<u8>>);

    fn entries(p: &Path) -> Vec<Seen> {
        let db = bolt::Db::open(p).unwrap();
        let mut out = Vec::new();
        let r = bolt::walk(&db, &mut |path: &[Vec<u8>], k: &[u8], v: Option<&[u8]>| out.push((path.to_vec(), k.to_vec(), v.map(<[u8]>::to_vec))));
        assert!(r.is_clean(), "{:?}", r.faults);
        out
    }

    #[test]
    fn leases_seen_by_the_capture_join_the_base_lease_table() {
        let d = tempfile::tempdir().unwrap();
        let b = base(d.path());
        let out = d.path().join("out.db");
        let leases = || vec![(9, 30), (7, 99), (5, 60), (0, 1)];
        replay(&b, None, &out, &mut std::iter::empty(), &leases).unwrap();
        let got: Vec<(i64, schema::Lease)> = entries(&out)
            .into_iter()
            .filter(|(p, _, _)| p.first().is_some_and(|n| n == b"lease"))
            .map(|(_, k, v)| (i64::from_be_bytes(k.try_into().unwrap()), schema::Lease::decode(&v.unwrap()[..]).unwrap()))
            .collect();
        let want = vec![
            (5, schema::Lease { id: 5, ttl: 60, remaining_ttl: 0 }),
            (7, schema::Lease { id: 7, ttl: 60, remaining_ttl: 0 }), // the base's own entry wins
            (9, schema::Lease { id: 9, ttl: 30, remaining_ttl: 0 }),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn appends_revisions_with_sub_numbering_and_tombstones() {
        let d = tempfile::tempdir().unwrap();
        let b = base(d.path());
        let put = |k: &[u8], c, m, v, val: &[u8], l| Change::Put {
            kv: KeyValue { key: k.to_vec(), create_revision: c, mod_revision: m, version: v, value: val.to_vec(), lease: l }.encode_to_vec(),
        };
        let revs = vec![
            RevisionChanges { revision: 4, changes: vec![put(b"a", 2, 4, 2, b"x", 0), Change::Delete { key: b"b".to_vec() }, put(b"c", 4, 4, 1, b"", 99)] },
            RevisionChanges { revision: 9, changes: vec![Change::Delete { key: b"a".to_vec() }] },
        ];
        let out = d.path().join("out.db");
        let mut it = revs.into_iter().map(Ok);
        let rep = replay(&b, None, &out, &mut it, &Vec::new).unwrap();
        assert_eq!((rep.base_revision, rep.last_revision, rep.revisions, rep.puts, rep.deletes), (3, 9, 2, 2, 2));
        assert_eq!(rep.base_trailer, Trailer::Absent);
        let got = entries(&out);
        let keys: Vec<Vec<u8>> = got.iter().filter(|(p, _, _)| p.first().is_some_and(|n| n == b"key")).map(|(_, k, _)| k.clone()).collect();
        let mut t41 = Revision { main: 4, sub: 1 }.to_bytes().to_vec();
        t41.push(b't');
        let mut t90 = Revision { main: 9, sub: 0 }.to_bytes().to_vec();
        t90.push(b't');
        assert_eq!(
            keys,
            vec![
                Revision { main: 2, sub: 0 }.to_bytes().to_vec(),
                Revision { main: 3, sub: 0 }.to_bytes().to_vec(),
                Revision { main: 4, sub: 0 }.to_bytes().to_vec(),
                t41.clone(),
                Revision { main: 4, sub: 2 }.to_bytes().to_vec(),
                t90
            ]
        );
        // A tombstone's value is KeyValue{key} and nothing else: 0a 01 'b'.
        let tomb = got.iter().find(|(_, k, _)| *k == t41).unwrap();
        assert_eq!(tomb.2.as_deref(), Some(&[0x0a, 1, b'b'][..]));
        // The other buckets are copied unchanged.
        assert!(got.iter().any(|(p, k, v)| p == &vec![b"meta".to_vec()] && k == b"consistent_index" && v.as_deref() == Some(&9u64.to_be_bytes()[..])));
        assert!(got.iter().any(|(p, k, _)| p == &vec![b"lease".to_vec()] && k == &7i64.to_be_bytes()));
        // etcd's status reads the new revision.
        assert_eq!(crate::status(&out).unwrap().revision, 9);
    }

    #[test]
    fn refuses_old_revisions_and_bad_puts() {
        let d = tempfile::tempdir().unwrap();
        let b = base(d.path());
        let out = d.path().join("out.db");
        let mut it = vec![Ok(RevisionChanges { revision: 3, changes: vec![Change::Delete { key: b"a".to_vec() }] })].into_iter();
        let e = replay(&b, None, &out, &mut it, &Vec::new).unwrap_err();
        assert!(e.to_string().contains("does not follow revision 3"), "{e}");
        assert!(!out.exists(), "a failed replay leaves no output");
        let kv = KeyValue { key: b"a".to_vec(), create_revision: 2, mod_revision: 5, version: 2, ..Default::default() }.encode_to_vec();
        let mut it = vec![Ok(RevisionChanges { revision: 6, changes: vec![Change::Put { kv }] })].into_iter();
        let e = replay(&b, None, &out, &mut it, &Vec::new).unwrap_err();
        assert!(e.to_string().contains("mod_revision is 5"), "{e}");
        let mut it = vec![Err("segment x: missing".to_string())].into_iter();
        assert!(matches!(replay(&b, None, &out, &mut it, &Vec::new), Err(ReplayError::Source(_))));
    }

    #[test]
    fn nothing_to_replay_copies_the_base() {
        let d = tempfile::tempdir().unwrap();
        let b = base(d.path());
        let out = d.path().join("out.db");
        let rep = replay(&b, None, &out, &mut std::iter::empty(), &Vec::new).unwrap();
        assert_eq!((rep.base_revision, rep.last_revision, rep.revisions), (3, 3, 0));
        assert_eq!(entries(&b), entries(&out));
    }
}
