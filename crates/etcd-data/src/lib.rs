//! etcd's backend schema on top of [`bolt`]: bucket names, revision keys, `mvccpb.KeyValue`,
//! the meta, lease, members and cluster buckets; and the snapshot operations that need only
//! the file: `status` (figures identical to `etcdctl`/`etcdutl snapshot status`) and `verify`
//! (sha256 trailer, structural check, schema check); and `restore`, which writes member data
//! directories (db, WAL, raft snapshot) that real etcd 3.4 and 3.5 start from.
//!
//! ```no_run
//! let st = etcd_data::status(std::path::Path::new("snapshot.db"))?;
//! println!("{:x}, {}, {}, {}", st.hash, st.revision, st.total_key, etcd_data::humanize::bytes(st.total_size as u64));
//! let report = etcd_data::verify(std::path::Path::new("snapshot.db"), &|_, _| {})?;
//! assert!(report.is_clean(), "{:?}", report.fault_lines());
//! # Ok::<(), etcd_data::Error>(())
//! ```

pub mod cluster;
pub mod durable;
mod error;
mod gojson;
pub mod hashkv;
pub mod humanize;
mod pbwire;
pub mod raftsnap;
pub mod replay;
pub mod restore;
pub mod schema;
mod status;
mod tee;
pub mod trailer;
mod verify;
pub mod wal;

use std::path::Path;

pub use error::{Error, Result};
pub use status::{Status, StatusVisitor};
pub use trailer::Trailer;
pub use verify::{verify, SchemaFault, SchemaSummary, VerifyReport};

/// `snapshot status`: fails, as etcd does, when the structural check finds any fault.
pub fn status(path: &Path) -> Result<Status> {
    status_of(&bolt::Db::open(path)?)
}

/// [`status`] of an open file (such as a snapshot still arriving).
pub fn status_of(db: &bolt::Db) -> Result<Status> {
    status_beside(db, &mut |_: &[Vec<u8>], _: &[u8], _: Option<&[u8]>| {})
}

/// [`status_of`] and [`hashkv::hash_kv`] at the current revision from one walk of the file
/// (a backup needs both, and its key map; each walk reads the whole file), handing every
/// entry to `beside` as well, as [`status_beside`].
pub fn status_and_hash_kv_beside(db: &bolt::Db, beside: &mut dyn bolt::Visitor) -> Result<(Status, std::result::Result<hashkv::HashKv, hashkv::HashKvError>)> {
    struct WithHashKv<'a>(Option<&'a mut hashkv::HashKvFold>, &'a mut dyn bolt::Visitor);
    impl bolt::Visitor for WithHashKv<'_> {
        fn entry(&mut self, path: &[Vec<u8>], key: &[u8], value: Option<&[u8]>) {
            self.entry_at(path, key, value, None);
        }
        fn entry_at(&mut self, path: &[Vec<u8>], key: &[u8], value: Option<&[u8]>, at: Option<u64>) {
            if let Some(fold) = &mut self.0 {
                match path {
                    [] if key == schema::KEY && value.is_none() => fold.key_bucket_seen = true,
                    [bucket] if bucket == schema::KEY => fold.entry(key, value),
                    _ => {}
                }
            }
            self.1.entry_at(path, key, value, at);
        }
    }
    // A fold the meta bucket refuses still lets the walk give the status.
    let mut fold = hashkv::HashKvFold::new(db, None);
    let status = status_beside(db, &mut WithHashKv(fold.as_mut().ok(), beside))?;
    Ok((status, fold.and_then(hashkv::HashKvFold::finish)))
}

/// [`status_of`], handing every entry the walk meets to `beside` as well (with its value's
/// offset, [`bolt::Visitor::entry_at`]).
pub fn status_beside(db: &bolt::Db, beside: &mut dyn bolt::Visitor) -> Result<Status> {
    struct Both<'a>(StatusVisitor, &'a mut dyn bolt::Visitor);
    impl bolt::Visitor for Both<'_> {
        fn entry(&mut self, path: &[Vec<u8>], key: &[u8], value: Option<&[u8]>) {
            self.entry_at(path, key, value, None);
        }
        fn entry_at(&mut self, path: &[Vec<u8>], key: &[u8], value: Option<&[u8]>, at: Option<u64>) {
            self.0.entry(path, key, value);
            self.1.entry_at(path, key, value, at);
        }
    }
    let path = db.path();
    let mut both = Both(StatusVisitor::default(), beside);
    let report = bolt::walk(db, &mut both);
    let v = both.0;
    if let Some(first) = report.faults.first() {
        return Err(Error::Integrity { path: path.to_path_buf(), count: report.fault_count, first: first.clone(), faults: report.faults });
    }
    if let Some(p) = v.problems.first() {
        return Err(Error::Schema { path: path.to_path_buf(), what: p.clone() });
    }
    Ok(v.finish(db.size()))
}
