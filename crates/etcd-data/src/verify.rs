//! `snapshot verify`: the sha256 trailer, bbolt's full structural check and a check of etcd's
//! schema, in one pass over the pages (the trailer hash runs on a second thread meanwhile).
//!
//! Schema rules checked, per bucket (see [`crate::schema`]):
//! * `key`: 17-byte revision keys (`main`, `_`, `sub`), 18 with a final `t` for tombstones;
//!   every value decodes as `mvccpb.KeyValue` with a non-empty key; a put's `mod_revision`
//!   equals its key's main revision, `0 < create_revision <= mod_revision` and `version >= 1`;
//!   an empty value is allowed only as etcdutl's `--bump-revision` marker.
//! * `meta`: `consistent_index` and `term` are 8 bytes; compaction revisions are revision keys.
//! * `lease`: 8-byte IDs whose `leasepb.Lease` carries the same ID.
//! * `members`: hex IDs whose JSON carries the same decimal `id`; `members_removed`: `removed`.
//! * `alarm`: keys decode as `AlarmMember`. `auth`: `authEnabled` 1 byte, `authRevision` 8.
//! * `authUsers`/`authRoles`: the stored name equals the key.
//!
//! Unknown buckets and keys are warnings, not damage: newer etcd versions add some.

use std::path::{Path, PathBuf};

use bolt::Visitor;
use prost::Message;

use crate::error::Result;
use crate::schema::{self, KeyValue, RevisionKey};
use crate::status::{Status, StatusVisitor};
use crate::trailer::{self, Trailer};

const MAX_SCHEMA_FAULTS: usize = 1000;

/// A value or key that breaks etcd's schema.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SchemaFault {
    pub bucket: String,
    pub key: String,
    pub what: String,
}

impl std::fmt::Display for SchemaFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bucket {:?}, key {}: {}", self.bucket, self.key, self.what)
    }
}

/// What the schema check saw.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SchemaSummary {
    pub revisions: u64,
    pub puts: u64,
    pub tombstones: u64,
    pub leases: u64,
    pub members: Vec<String>,
    pub consistent_index: Option<u64>,
    pub term: Option<u64>,
    pub compact_revision: Option<i64>,
    pub scheduled_compact_revision: Option<i64>,
    pub storage_version: Option<String>,
}

/// The full result of `snapshot verify`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifyReport {
    pub path: PathBuf,
    pub file_size: u64,
    pub trailer: Trailer,
    /// Status figures, when the structure is clean enough to compute them as etcd would.
    pub status: Option<Status>,
    pub pages_total: u64,
    pub pages_in_use: u64,
    pub pages_free: u64,
    pub page_size: u32,
    pub structure_faults: Vec<String>,
    pub structure_fault_count: usize,
    pub schema: SchemaSummary,
    pub schema_faults: Vec<SchemaFault>,
    pub schema_fault_count: usize,
    pub warnings: Vec<String>,
}

impl VerifyReport {
    /// True when nothing is damaged (warnings allowed).
    pub fn is_clean(&self) -> bool {
        !self.trailer.is_mismatch() && self.structure_fault_count == 0 && self.schema_fault_count == 0
    }

    /// Every fault, one line each, trailer first.
    pub fn fault_lines(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Trailer::Mismatch { expected, actual } = &self.trailer {
            v.push(format!("sha256 trailer (offset {:#x}) does not match the data: trailer {expected}, data {actual}", self.file_size - trailer::TRAILER_LEN));
        }
        v.extend(self.structure_faults.iter().cloned());
        if self.structure_fault_count > self.structure_faults.len() {
            v.push(format!("… and {} more structural faults", self.structure_fault_count - self.structure_faults.len()));
        }
        v.extend(self.schema_faults.iter().map(|f| f.to_string()));
        if self.schema_fault_count > self.schema_faults.len() {
            v.push(format!("… and {} more schema faults", self.schema_fault_count - self.schema_faults.len()));
        }
        v
    }
}

#[derive(Default)]
struct SchemaChecker {
    bucket: Vec<u8>,
    faults: Vec<SchemaFault>,
    fault_count: usize,
    warnings: Vec<String>,
    summary: SchemaSummary,
}

fn be_u64(v: &[u8]) -> Option<u64> {
    v.try_into().ok().map(u64::from_be_bytes)
}

impl SchemaChecker {
    fn fault(&mut self, key: &[u8], what: String) {
        self.fault_count += 1;
        if self.faults.len() < MAX_SCHEMA_FAULTS {
            self.faults.push(SchemaFault { bucket: String::from_utf8_lossy(&self.bucket).into_owned(), key: bolt::show(key), what });
        }
    }

    fn key_entry(&mut self, k: &[u8], v: &[u8]) {
        let rk = match RevisionKey::parse(k) {
            Ok(rk) => rk,
            Err(e) => return self.fault(k, e.to_string()),
        };
        self.summary.revisions += 1;
        if v.is_empty() && !rk.tombstone {
            return; // etcdutl's --bump-revision marker
        }
        let kv = match KeyValue::decode(v) {
            Ok(kv) => kv,
            Err(e) => return self.fault(k, format!("value does not decode as mvccpb.KeyValue: {e}")),
        };
        if kv.key.is_empty() {
            return self.fault(k, "KeyValue has an empty key".into());
        }
        if rk.tombstone {
            self.summary.tombstones += 1;
            return;
        }
        self.summary.puts += 1;
        let main = rk.rev.main;
        if kv.mod_revision != main {
            self.fault(k, format!("KeyValue mod_revision {} differs from the revision key's {main}", kv.mod_revision));
        } else if kv.create_revision <= 0 || kv.create_revision > kv.mod_revision {
            self.fault(k, format!("KeyValue create_revision {} outside 1..={}", kv.create_revision, kv.mod_revision));
        } else if kv.version < 1 {
            self.fault(k, format!("KeyValue version {} (want >= 1)", kv.version));
        }
    }

    fn meta_entry(&mut self, k: &[u8], v: &[u8]) {
        let rev_of = |v: &[u8]| RevisionKey::parse(v).ok().filter(|r| !r.tombstone).map(|r| r.rev.main);
        match k {
            schema::META_CONSISTENT_INDEX | schema::META_TERM => match be_u64(v) {
                Some(n) if k == schema::META_TERM => self.summary.term = Some(n),
                Some(n) => self.summary.consistent_index = Some(n),
                None => self.fault(k, format!("value of {} bytes (want 8)", v.len())),
            },
            schema::META_SCHEDULED_COMPACT | schema::META_FINISHED_COMPACT => match rev_of(v) {
                Some(m) if k == schema::META_FINISHED_COMPACT => self.summary.compact_revision = Some(m),
                Some(m) => self.summary.scheduled_compact_revision = Some(m),
                None => self.fault(k, format!("value of {} bytes is not a revision", v.len())),
            },
            schema::META_STORAGE_VERSION => self.summary.storage_version = Some(String::from_utf8_lossy(v).into_owned()),
            schema::META_CONF_STATE => {
                if serde_json::from_slice::<serde_json::Value>(v).is_err() {
                    self.fault(k, "confState is not JSON".into())
                }
            }
            _ => self.warnings.push(format!("bucket \"meta\": unknown key {}", bolt::show(k))),
        }
    }

    fn member_entry(&mut self, k: &[u8], v: &[u8]) {
        let Some(id) = std::str::from_utf8(k).ok().and_then(|s| u64::from_str_radix(s, 16).ok()) else {
            return self.fault(k, "member key is not a hex member ID".into());
        };
        if self.bucket == schema::MEMBERS_REMOVED {
            if v != b"removed" {
                self.fault(k, format!("value {} (want \"removed\")", bolt::show(v)));
            }
            return;
        }
        match serde_json::from_slice::<serde_json::Value>(v) {
            Ok(j) if j.get("id").and_then(|x| x.as_u64()) == Some(id) => {
                let name = j.get("name").and_then(|n| n.as_str()).unwrap_or("");
                self.summary.members.push(format!("{id:x}{}{name}", if name.is_empty() { "" } else { "=" }));
            }
            Ok(_) => self.fault(k, "member JSON lacks an \"id\" equal to the key".into()),
            Err(e) => self.fault(k, format!("member value is not JSON: {e}")),
        }
    }
}

impl Visitor for SchemaChecker {
    fn entry(&mut self, path: &[Vec<u8>], k: &[u8], value: Option<&[u8]>) {
        if path.is_empty() {
            self.bucket = k.to_vec();
            if value.is_some() {
                self.fault(k, "top-level key is not a bucket".into());
            } else if !schema::ALL_BUCKETS.contains(&k) {
                self.warnings.push(format!("unknown bucket {}", bolt::show(k)));
            }
            return;
        }
        let Some(v) = value else {
            if path.len() == 1 {
                self.warnings.push(format!("bucket {}: nested bucket {} (etcd writes none)", bolt::show(&path[0]), bolt::show(k)));
            }
            return;
        };
        if path.len() > 1 {
            return;
        }
        match self.bucket.as_slice() {
            schema::KEY => self.key_entry(k, v),
            schema::META => self.meta_entry(k, v),
            schema::LEASE => match (be_u64(k), schema::Lease::decode(v)) {
                (Some(id), Ok(l)) if l.id as u64 == id => self.summary.leases += 1,
                (Some(_), Ok(l)) => self.fault(k, format!("lease value carries ID {:x}, not the key's", l.id)),
                (None, _) => self.fault(k, format!("lease key of {} bytes (want 8)", k.len())),
                (_, Err(e)) => self.fault(k, format!("value does not decode as leasepb.Lease: {e}")),
            },
            schema::MEMBERS | schema::MEMBERS_REMOVED => self.member_entry(k, v),
            schema::ALARM => {
                if let Err(e) = schema::AlarmMember::decode(k) {
                    self.fault(k, format!("key does not decode as AlarmMember: {e}"))
                }
            }
            schema::AUTH => match k {
                b"authEnabled" if v.len() != 1 => self.fault(k, format!("value of {} bytes (want 1)", v.len())),
                b"authRevision" if v.len() != 8 => self.fault(k, format!("value of {} bytes (want 8)", v.len())),
                _ => {}
            },
            schema::AUTH_USERS | schema::AUTH_ROLES => match schema::AuthName::decode(v) {
                Ok(n) if n.name == k => {}
                Ok(_) => self.fault(k, "stored name differs from the key".into()),
                Err(e) => self.fault(k, format!("value does not decode as an authpb record: {e}")),
            },
            _ => {}
        }
    }
}

struct Both<'a>(&'a mut StatusVisitor, &'a mut SchemaChecker);
impl Visitor for Both<'_> {
    fn entry(&mut self, path: &[Vec<u8>], k: &[u8], v: Option<&[u8]>) {
        self.0.entry(path, k, v);
        self.1.entry(path, k, v);
    }
}

/// Verify a snapshot (or a raw db file). `progress(done, total)` reports bytes hashed.
pub fn verify(path: &Path, progress: &(dyn Fn(u64, u64) + Sync)) -> Result<VerifyReport> {
    let db = bolt::Db::open(path)?;
    let file_len = db.file_len();
    let (trailer, (report, status, schema)) = std::thread::scope(|s| {
        let hasher = s.spawn(|| trailer::check(path, |done| progress(done, file_len)));
        let mut sv = StatusVisitor::default();
        let mut sc = SchemaChecker::default();
        let report = bolt::walk(&db, &mut Both(&mut sv, &mut sc));
        let walked = (report, sv, sc);
        (hasher.join().expect("hash thread"), walked)
    });
    let trailer = trailer?;
    let mut warnings = report.warnings.clone();
    warnings.extend(schema.warnings.iter().cloned());
    let status = (report.is_clean() && status.problems.is_empty()).then(|| status.finish(db.size()));
    Ok(VerifyReport {
        path: path.to_path_buf(),
        file_size: file_len,
        trailer,
        status,
        pages_total: report.pages_total,
        pages_in_use: report.pages_in_use,
        pages_free: report.pages_free,
        page_size: db.page_size(),
        structure_faults: report.faults.iter().map(|f| f.to_string()).collect(),
        structure_fault_count: report.fault_count,
        schema: schema.summary,
        schema_faults: schema.faults,
        schema_fault_count: schema.fault_count,
        warnings,
    })
}
