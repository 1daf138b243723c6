//! `snapshot status`, computed as etcd 3.4's etcdctl and 3.5's etcdutl compute it
//! (`etcdutl/snapshot/v3_snapshot.go` `Status`; `clientv3/snapshot/v3_snapshot.go` in 3.4):
//!
//! * the file must pass bbolt's `tx.Check()` (here: [`bolt::walk`]'s check);
//! * `hash` is one CRC-32C (Castagnoli) over, for every top-level bucket in name order, the
//!   bucket name followed by each of its entries' key and value in key order (a nested
//!   bucket's value counts as empty);
//! * `revision` is the main revision of the last key of the `key` bucket (0 when empty);
//! * `totalKey` counts every entry of every top-level bucket (meta, members and all);
//! * `totalSize` is `meta.pgid * pageSize`, not the file length.
//!
//! etcd 3.6 adds `version` (from `meta/storageVersion`); it is reported only when present, so
//! the figures for 3.4 and 3.5 snapshots match theirs exactly.

use bolt::Visitor;

use crate::schema;

/// The figures `snapshot status` prints.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Status {
    pub hash: u32,
    pub revision: i64,
    #[serde(rename = "totalKey")]
    pub total_key: i64,
    #[serde(rename = "totalSize")]
    pub total_size: i64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub version: Option<String>,
}

/// Accumulates the status figures during a walk.
#[derive(Debug, Default)]
pub struct StatusVisitor {
    crc: u32,
    revision: i64,
    total_key: i64,
    version: Option<String>,
    in_key_bucket: bool,
    in_meta_bucket: bool,
    /// A top-level entry that is not a bucket, or a `key` entry too short for a revision:
    /// etcd fails on these (it would dereference a nil bucket, or panic in `bytesToRev`).
    pub problems: Vec<String>,
}

impl StatusVisitor {
    pub fn finish(self, total_size: u64) -> Status {
        Status { hash: self.crc, revision: self.revision, total_key: self.total_key, total_size: total_size as i64, version: self.version }
    }
}

impl Visitor for StatusVisitor {
    fn entry(&mut self, path: &[Vec<u8>], key: &[u8], value: Option<&[u8]>) {
        match path.len() {
            0 => {
                if value.is_some() {
                    self.problems.push(format!("top-level key {} is not a bucket", bolt::show(key)));
                }
                self.crc = crc32c::crc32c_append(self.crc, key);
                self.in_key_bucket = key == schema::KEY;
                self.in_meta_bucket = key == schema::META;
            }
            1 => {
                self.crc = crc32c::crc32c_append(self.crc, key);
                if let Some(v) = value {
                    self.crc = crc32c::crc32c_append(self.crc, v);
                }
                self.total_key += 1;
                if self.in_key_bucket {
                    match schema::Revision::main_of(key) {
                        Some(main) => self.revision = main,
                        None => self.problems.push(format!("key bucket entry {} is too short for a revision", bolt::show(key))),
                    }
                } else if self.in_meta_bucket && key == schema::META_STORAGE_VERSION {
                    self.version = value.map(|v| String::from_utf8_lossy(v).into_owned());
                }
            }
            _ => {}
        }
    }
}
